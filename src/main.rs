//! `wick`: train, evaluate and sample Monte Carlo RL agents, density models and pretrained encoders.

mod cli;
mod data;
mod density;
mod flags;
mod launch;
mod plot;
mod reinforce;
mod tabular;
mod pretrain;

use clap::FromArgMatches;
use std::process::ExitCode;

/// Print `wick: {line}` to stderr in one write: `eprintln!` writes its pieces separately, and
/// under mpirun another process's output (mpirun's own abort banner) can land between them.
fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("wick: {line}\n").as_bytes());
}

fn main() -> ExitCode {
    wick_core::cpu::keep_freed_memory();
    wick_core::signal::default_sigpipe();
    // A bug must not print a backtrace at the user: one line, and where to report it.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let loc = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        say(&format!("internal error: {}{loc} (this is a bug in wick; please report it)", msg.lines().next().unwrap_or("")));
    }));

    // The matches as well as the parsed flags: they tell a flag given from its default.
    let parsed = cli::command().try_get_matches().and_then(|m| cli::Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(e.kind(), DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand) {
                let _ = e.print();
                return if e.kind() == DisplayHelpOnMissingArgumentOrSubcommand { ExitCode::from(2) } else { ExitCode::SUCCESS };
            }
            let text = e.render().to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("bad arguments");
            // A value outside a closed set: say which values there are, on the same line.
            let valid = text.lines().map(str::trim).find(|l| l.starts_with("[possible values:")).map(|l| format!(" {l}")).unwrap_or_default();
            say(&format!("{}{valid} (see --help)", first.trim_start_matches("error: ")));
            return ExitCode::from(2);
        }
    };
    // Rayon's global pool gets --threads workers, this thread being one of them: the kernels'
    // parallel loops then run from inside the pool instead of handing each one to a worker and
    // sleeping until it is done (with one thread they run inline, which matters most for MPI
    // ranks of one thread each). Candle reads RAYON_NUM_THREADS for its own kernels.
    if let Some(t) = cli::threads(&matches).filter(|&t| t > 0) {
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    let _ = rayon::ThreadPoolBuilder::new().use_current_thread().build_global();
    // Under mpirun/srun: join the MPI world (dist.rs). Without the `mpi` feature, only rank 0
    // says so; the others just stop.
    let world = match wick_core::dist::init() {
        Ok(w) => w,
        Err(e) => {
            if wick_core::dist::launched().is_none_or(|(rank, _)| rank == 0) {
                say(&format!("{e}"));
            }
            return ExitCode::from(2);
        }
    };
    match cli::run(cli, &matches) {
        Ok(code) => {
            wick_core::dist::finalize();
            code
        }
        Err(e) if world.size() > 1 => {
            // One rank failed: stop them all now, with one line naming it. An error every rank
            // hits alike (a bad flag) is rank 0's to report: the others wait two seconds, in
            // which rank 0's abort ends them first (300 ms was not always enough).
            if world.is_root() {
                say(&format!("{e}"));
            } else {
                std::thread::sleep(std::time::Duration::from_secs(2));
                say(&format!("rank {} of {}: {e}", world.rank(), world.size()));
            }
            wick_core::dist::abort(2)
        }
        Err(e) => {
            say(&format!("{e}"));
            ExitCode::from(2)
        }
    }
}
