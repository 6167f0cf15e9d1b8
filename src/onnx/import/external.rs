//! Weights in an external data file beside the model: `torch.onnx.export`
//! writes them to `model.onnx.data` by default (`external_data=True`).

use super::{dims_of, is_external};
use crate::error::{Error, Result};
use crate::onnx::proto::{tensor_proto::DataType, ModelProto};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

/// Reads the external data of every initializer into its `raw_data`, from
/// files in `folder` named by a plain relative `location` (no `..`, not
/// absolute). Each tensor's size is worked out from its dimensions (checked
/// arithmetic) and compared with its `length` and with what the file holds
/// from its `offset` before anything is allocated. The tensors together may
/// not read more bytes than their files hold, so that a model pointing many
/// tensors at the same bytes of one large file cannot make the import
/// allocate many times that file.
pub(super) fn load(model: &mut ModelProto, folder: &Path, source: &str) -> Result<()> {
    let Some(graph) = model.graph.as_mut() else {
        return Ok(());
    };
    let mut files: HashMap<String, (File, u64)> = HashMap::new();
    // Bytes read so far, and the sizes of the files opened so far, each
    // file counted once however many names it is opened by.
    let (mut loaded, mut files_len) = (0u64, 0u64);
    let mut counted: HashSet<String> = HashSet::new();
    for t in graph.initializer.iter_mut().filter(|t| is_external(t)) {
        let name = t.name().to_string();
        let bad = |what: String| Error::Data(format!("{source}: tensor '{name}': {what}"));
        let number = |key: &str, value: &str| {
            value
                .parse::<u64>()
                .map_err(|_| bad(format!("external data {key} '{value}' is not a number")))
        };
        let (mut location, mut offset, mut length) = (None, 0, None);
        for entry in &t.external_data {
            match entry.key() {
                "location" => location = Some(entry.value().to_string()),
                "offset" => offset = number("offset", entry.value())?,
                "length" => length = Some(number("length", entry.value())?),
                "checksum" => {}
                other => return Err(bad(format!("external data key '{other}' is not supported"))),
            }
        }
        let location = location.ok_or_else(|| bad("its external data has no location".into()))?;
        let relative = Path::new(&location);
        if location.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(bad(format!(
                "external data location '{location}' is not a file in the model's folder"
            )));
        }
        let value_size = match DataType::try_from(t.data_type.unwrap_or(0)) {
            Ok(DataType::Float) => 4,
            Ok(DataType::Int64) => 8,
            other => {
                return Err(bad(format!(
                    "external data of type {} is not supported (float32 or int64)",
                    other.map_or("unknown", |d| d.as_str_name())
                )))
            }
        };
        let (_, count) = dims_of(t).map_err(&bad)?;
        let bytes = count
            .checked_mul(value_size)
            .and_then(|b| u64::try_from(b).ok())
            .ok_or_else(|| bad(format!("dimensions {:?} overflow", t.dims)))?;
        if length.is_some_and(|l| l != bytes) {
            return Err(bad(format!(
                "external data length {} does not match its dimensions {:?} ({bytes} bytes)",
                length.unwrap_or(0),
                t.dims
            )));
        }
        let (file, file_len) = match files.entry(location.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let path = folder.join(relative);
                let file = File::open(&path).map_err(|e| {
                    bad(format!(
                        "cannot open its external data file {}: {e}",
                        path.display()
                    ))
                })?;
                let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
                if counted.insert(file_identity(&file, &path).map_err(|e| Error::io(&path, e))?) {
                    files_len = files_len.saturating_add(len);
                }
                e.insert((file, len))
            }
        };
        if offset.checked_add(bytes).is_none_or(|end| end > *file_len) {
            return Err(bad(format!(
                "external data file '{location}' has {file_len} bytes; the tensor needs {bytes} from offset {offset}"
            )));
        }
        loaded = loaded.saturating_add(bytes);
        if loaded > files_len {
            return Err(bad(format!(
                "the external data tensors read {loaded} bytes so far, more than their files hold ({files_len}): tensors share bytes"
            )));
        }
        let mut data = vec![0u8; bytes as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut data))
            .map_err(|e| bad(format!("cannot read external data file '{location}': {e}")))?;
        t.raw_data = Some(data);
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(())
}

/// One name per file on the disk, whatever it was opened by: two names for
/// one file (a link, a case variant) must not count its bytes twice.
fn file_identity(file: &File, path: &Path) -> std::io::Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = path;
        let meta = file.metadata()?;
        Ok(format!("{}:{}", meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        std::fs::canonicalize(path).map(|p| p.display().to_string())
    }
}
