//! `convnet gradcheck`: the max relative error between backprop and the
//! numerical gradient, per parameter, for every layer and for SimpleConvNet.

use clap::Args;
use convnet::gradient_check::{check_all, check_all_reference};
use std::process::ExitCode;

#[derive(Args)]
pub struct GradcheckArgs {
    /// Fail (exit 1) if any error is above this.
    #[arg(long, default_value_t = 1e-6)]
    tolerance: f64,
    /// Seed of the random inputs and weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    reference: crate::ReferenceFlag,
}

pub fn run(args: GradcheckArgs) -> anyhow::Result<ExitCode> {
    let report = if args.reference.on {
        check_all_reference(args.seed)?
    } else {
        check_all(args.seed)?
    };
    // At least 36 wide, and as wide as the longest component.
    let longest = report.iter().map(|(c, ..)| c.chars().count()).max();
    let width = longest.unwrap_or(0).max(36);
    println!(
        "{:<width$} {:<14} {:>14}",
        "component", "gradient", "max rel error"
    );
    let mut worst = 0.0f64;
    for (component, name, err) in &report {
        let flag = if *err <= args.tolerance { "" } else { "  FAIL" };
        println!("{component:<width$} {name:<14} {err:>14.3e}{flag}");
        worst = worst.max(*err);
    }
    if worst <= args.tolerance {
        println!(
            "all {} gradients agree (max relative error {worst:.3e} <= {:e})",
            report.len(),
            args.tolerance
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "max relative error {worst:.3e} is above the tolerance {:e}",
            args.tolerance
        );
        Ok(ExitCode::FAILURE)
    }
}
