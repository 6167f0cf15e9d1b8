//! How the convolution's backward cuts a batch into chunks that run in
//! parallel (book §7.4.3 sums `dW` and `db` over the batch; here each chunk
//! sums its own images, and the chunks' sums are added in order).
//!
//! The number of chunks is fixed, [`MAX_CHUNKS`] (fewer for a smaller
//! batch), not the number of threads, so the sums, and the gradients, are
//! the same on any machine. With c chunks for a batch of n:
//!
//! ```text
//! chunk i = images ⌊i·n/c⌋ .. ⌊(i+1)·n/c⌋      c = min(n, MAX_CHUNKS)
//! ```
//!
//! so the sizes differ by at most one, and so do the halves and quarters
//! of the chunks that rayon hands out to two or four threads. A batch of
//! 100 is 6, 6, 6, 7 four times over (halves of 50). Chunks of ⌈100/16⌉ = 7
//! would be 14 of 7 and one of 2, halves of 49 and 51, and one thread would
//! wait for the other at the end of every layer.
//!
//! ```
//! let (n, c) = (100, 16);
//! let sizes: Vec<usize> = (0..c).map(|i| (i + 1) * n / c - i * n / c).collect();
//! assert_eq!(sizes[..4], [6, 6, 6, 7]);
//! assert_eq!(sizes[..8].iter().sum::<usize>(), 50);
//! ```

use std::ops::Range;

/// The batch is cut into at most this many chunks for parallel work.
pub(crate) const MAX_CHUNKS: usize = 16;

/// The chunks of a batch of `images` (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchChunks {
    images: usize,
    count: usize,
}

impl BatchChunks {
    pub(crate) fn new(images: usize) -> Self {
        BatchChunks {
            images,
            count: images.min(MAX_CHUNKS),
        }
    }

    /// How many chunks: `min(images, MAX_CHUNKS)`, 0 for an empty batch.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The images of chunk `i`: `⌊i·n/c⌋ .. ⌊(i+1)·n/c⌋`.
    pub(crate) fn range(&self, i: usize) -> Range<usize> {
        i * self.images / self.count..(i + 1) * self.images / self.count
    }

    /// Values of chunk `i` in a buffer of `image_len` values per image.
    fn len(&self, i: usize, image_len: usize) -> usize {
        if i < self.count {
            self.range(i).len() * image_len
        } else {
            0
        }
    }

    /// `data`, `image_len` values per image, cut into the chunks (the
    /// slices past `count` are empty). `data` may run on past the batch.
    pub(crate) fn split<'a, T>(&self, data: &'a [T], image_len: usize) -> [&'a [T]; MAX_CHUNKS] {
        let mut rest = data;
        std::array::from_fn(|i| {
            let (chunk, after) = rest.split_at(self.len(i, image_len));
            rest = after;
            chunk
        })
    }

    /// [`split`](Self::split) for a mutable buffer.
    pub(crate) fn split_mut<'a, T>(
        &self,
        data: &'a mut [T],
        image_len: usize,
    ) -> [&'a mut [T]; MAX_CHUNKS] {
        let mut rest = data;
        std::array::from_fn(|i| {
            let (chunk, after) = std::mem::take(&mut rest).split_at_mut(self.len(i, image_len));
            rest = after;
            chunk
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every image lands in exactly one chunk, in order; sizes differ by
    /// at most one; and the halves of the chunks differ by at most one
    /// image (what two threads get).
    #[test]
    fn chunks_cover_the_batch_in_order_and_balance_the_halves() {
        for n in 0..300 {
            let chunks = BatchChunks::new(n);
            assert_eq!(chunks.count(), n.min(MAX_CHUNKS));
            let mut next = 0;
            let mut sizes = Vec::new();
            for i in 0..chunks.count() {
                let range = chunks.range(i);
                assert_eq!(range.start, next, "batch {n}, chunk {i}");
                assert!(!range.is_empty(), "batch {n}, chunk {i}");
                next = range.end;
                sizes.push(range.len());
            }
            assert_eq!(next, n);
            if n > 0 {
                let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(max - min <= 1, "batch {n}: {sizes:?}");
                let half = chunks.count() / 2;
                let first: usize = sizes[..half].iter().sum();
                let second: usize = sizes[half..].iter().sum();
                assert!(first.abs_diff(second) <= 1, "batch {n}: {sizes:?}");
            }
        }
        let sizes: Vec<usize> = (0..16)
            .map(|i| BatchChunks::new(100).range(i).len())
            .collect();
        assert_eq!(sizes, [6, 6, 6, 7].repeat(4));
    }

    /// `split` and `split_mut` cut a buffer at the chunks' images.
    #[test]
    fn split_follows_the_ranges() {
        let chunks = BatchChunks::new(21);
        let data: Vec<usize> = (0..21 * 3 + 5).collect(); // 5 values past the batch
        let parts = chunks.split(&data, 3);
        for (i, part) in parts.iter().enumerate() {
            if i < chunks.count() {
                let range = chunks.range(i);
                assert_eq!(part.first(), Some(&(range.start * 3)));
                assert_eq!(part.len(), range.len() * 3);
            } else {
                assert!(part.is_empty());
            }
        }
        let mut data = vec![0usize; 21 * 2];
        for (i, part) in chunks.split_mut(&mut data, 2).into_iter().enumerate() {
            part.fill(i);
        }
        for (image, pair) in data.chunks(2).enumerate() {
            let chunk = (0..chunks.count())
                .position(|i| chunks.range(i).contains(&image))
                .unwrap();
            assert_eq!(pair, [chunk, chunk]);
        }
        // No values per image (a buffer a layer does not use): all empty.
        assert!(chunks.split::<u32>(&[], 0).iter().all(|p| p.is_empty()));
    }
}
