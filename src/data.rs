//! `wick data fetch mnist` and `wick data export`: get the full MNIST, and write the bits a
//! run trains on for other programs (the PyTorch references in `scripts/torch_density.py`).
//!
//! **fetch** downloads the four IDX files from torchvision's mirrors, in turn
//! ([`MNIST_MIRRORS`], overridable with `WICK_MNIST_MIRRORS=URL,URL,...`), checks the MD5 of
//! each decompressed file against [`MNIST_FILES`], and only when all four are good writes them
//! (each to a temp file, then renamed), so a failed or interrupted fetch never leaves a file
//! that looks complete. Files already there and verified are kept; a file there that fails
//! the check is an error (never overwritten silently).
//!
//! **export** writes `binarized_<name>_{train,valid,test}.amat` (one row per line, 0/1
//! separated by spaces: the format of the papers' binarized MNIST) with the run's
//! binarization, static by default for `mnist`.

use clap::{Args, Subcommand};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use wick_core::binarize::{self, Binarize};
use wick_core::data::{self, Dataset, Split};
use wick_core::{bail, ensure, Error, Result};

/// torchvision's MNIST mirrors (`torchvision.datasets.MNIST.mirrors`), tried in this order.
pub const MNIST_MIRRORS: [&str; 2] = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"];

/// The four files and the MD5 of each decompressed (the canonical IDX bytes; the `.gz`
/// wrappers differ between mirrors and re-compressions, the contents do not).
pub const MNIST_FILES: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
    ("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
    ("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
    ("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
];

/// Largest download accepted (the training images are 9.9 MB compressed).
const MAX_BYTES: u64 = 64 << 20;

#[derive(Subcommand)]
pub enum DataCmd {
    /// Download a data set (mnist) from its public mirrors, verify it, and store it where --data finds it
    Fetch(FetchArgs),
    /// Write a data set's binarized splits as binarized_<name>_{train,valid,test}.amat (for the PyTorch references)
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// The data set: mnist
    pub name: String,
    /// Folder to write the four files into [default: $WICK_DATA_DIR/mnist, else the cache folder (~/.cache/wick/mnist)]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// No progress lines
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The data set: mnist, digits, mnist5k, or a path (as for --data)
    pub data: String,
    /// Where --data mnist looks first (DIR or DIR/mnist)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// threshold or static (dynamic redraws the training bits every epoch: there is no one file of them) [default: static for mnist, else threshold]
    #[arg(long)]
    pub binarize: Option<String>,
    /// With --binarize threshold: pixel >= threshold is 1 [default: the data set's]
    #[arg(long, allow_negative_numbers = true)]
    pub threshold: Option<f32>,
    /// Output format: amat
    #[arg(long, default_value = "amat")]
    pub format: String,
    /// Output folder (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace files of the same names already in --out
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: DataCmd) -> Result<ExitCode> {
    match cmd {
        DataCmd::Fetch(a) => fetch(a),
        DataCmd::Export(a) => export(a),
    }
}

/// The mirrors to try: `WICK_MNIST_MIRRORS` (comma-separated base URLs) if set, else [`MNIST_MIRRORS`].
fn mirrors() -> Vec<String> {
    match std::env::var("WICK_MNIST_MIRRORS") {
        Ok(v) if !v.trim().is_empty() => {
            v.split(',').map(|m| m.trim()).filter(|m| !m.is_empty()).map(|m| if m.ends_with('/') { m.to_string() } else { format!("{m}/") }).collect()
        }
        _ => MNIST_MIRRORS.iter().map(|m| m.to_string()).collect(),
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Why `gz` is not the file `name` should be; `None` if it is.
fn check(name: &str, md5: &str, gz: &[u8]) -> Option<String> {
    match data::gunzip(gz, name) {
        Err(e) => Some(e.to_string().trim_start_matches(&format!("{name}: ")).to_string()),
        Ok(raw) => {
            let got = md5_hex(&raw);
            (got != md5).then(|| format!("MD5 {got} of the decompressed file, expected {md5}"))
        }
    }
}

/// One GET of at most [`MAX_BYTES`].
fn get(agent: &ureq::Agent, url: &str) -> std::result::Result<Vec<u8>, String> {
    let resp = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Status(code, r) => format!("HTTP {code} {}", r.status_text()),
        ureq::Error::Transport(t) => {
            let text = t.to_string();
            text.strip_prefix(&format!("{url}: ")).unwrap_or(&text).to_string()
        }
    })?;
    let mut body = Vec::new();
    resp.into_reader().take(MAX_BYTES + 1).read_to_end(&mut body).map_err(|e| format!("download cut off: {e}"))?;
    if body.len() as u64 > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes"));
    }
    Ok(body)
}

fn fetch(a: FetchArgs) -> Result<ExitCode> {
    ensure!(a.name == "mnist", "data fetch: unknown data set '{}': expected mnist", a.name);
    let dir = match a.dir.clone().or_else(data::mnist_default_dir) {
        Some(d) => d,
        None => bail!("no folder to fetch into: pass --dir DIR (neither WICK_DATA_DIR nor HOME is set)"),
    };
    let mirrors = mirrors();
    let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(20)).timeout_read(Duration::from_secs(60)).build();

    // Download and verify all four before writing any: a failure leaves the folder as it was.
    let mut todo: Vec<(&str, Vec<u8>)> = Vec::new();
    for (name, md5) in MNIST_FILES {
        let path = dir.join(name);
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(|e| Error::new(format!("reading '{}': {e}", path.display())))?;
            match check(name, md5, &bytes) {
                None => {
                    if !a.quiet {
                        eprintln!("{name}: already in {}, MD5 verified", dir.display());
                    }
                    continue;
                }
                Some(why) => bail!("'{}' is already there but is not MNIST's {name} ({why}); remove it and fetch again", path.display()),
            }
        }
        let mut failures = Vec::new();
        let mut got = None;
        for m in &mirrors {
            let url = format!("{m}{name}");
            if !a.quiet {
                eprintln!("{name}: fetching {url}");
            }
            match get(&agent, &url).and_then(|b| check(name, md5, &b).map_or(Ok(b), Err)) {
                Ok(b) => {
                    got = Some(b);
                    break;
                }
                Err(why) => failures.push(format!("{url}: {why}")),
            }
        }
        match got {
            Some(b) => todo.push((name, b)),
            None => bail!("could not fetch {name} from any mirror, nothing written ({})", failures.join("; ")),
        }
    }
    let created = !dir.exists();
    std::fs::create_dir_all(&dir).map_err(|e| Error::new(format!("creating '{}': {e}", dir.display())))?;
    for (k, (name, bytes)) in todo.iter().enumerate() {
        if let Err(e) = wick_core::checkpoint::write_atomic(&dir.join(name), bytes) {
            // Undo this fetch's earlier files, so the folder is as it was.
            for (n, _) in &todo[..k] {
                let _ = std::fs::remove_file(dir.join(n));
            }
            if created {
                let _ = std::fs::remove_dir(&dir);
            }
            return Err(e);
        }
    }
    let found_by_default = data::mnist_candidates(None).iter().any(|c| same_dir(c, &dir));
    let hint = if found_by_default { "--data mnist".to_string() } else { format!("--data mnist --data-dir {}", dir.display()) };
    println!("mnist: {} files written, 4 verified, in {} (use it with {hint})", todo.len(), dir.display());
    Ok(ExitCode::SUCCESS)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn export(a: ExportArgs) -> Result<ExitCode> {
    ensure!(a.format == "amat", "--format: '{}' is not a known format: expected amat", a.format);
    let how = match &a.binarize {
        Some(b) => b.parse::<Binarize>()?,
        None => Binarize::default_for(&a.data),
    };
    ensure!(how != Binarize::Dynamic, "--binarize dynamic redraws the training bits every epoch, so there is no one file of them: export static or threshold");
    ensure!(a.threshold.is_none() || how == Binarize::Threshold, "--threshold applies to --binarize threshold, not {how}");
    let d = Dataset::load_from(&a.data, a.data_dir.as_deref())?;
    let x = binarize::binarize(&d, how, a.threshold);
    let stem = match a.data.as_str() {
        "mnist" | "digits" | "mnist5k" => a.data.clone(),
        p => {
            let f = Path::new(p).file_name().and_then(|f| f.to_str()).unwrap_or("data");
            f.split('.').next().filter(|s| !s.is_empty()).unwrap_or("data").to_string()
        }
    };
    let paths: Vec<(Split, PathBuf)> = Split::ALL.iter().map(|&s| (s, a.out.join(format!("binarized_{stem}_{s}.amat")))).collect();
    if !a.force {
        if let Some((_, p)) = paths.iter().find(|(_, p)| p.exists()) {
            bail!("'{}' already exists: pass --force to replace it, or choose another --out", p.display());
        }
    }
    std::fs::create_dir_all(&a.out).map_err(|e| Error::new(format!("creating '{}': {e}", a.out.display())))?;
    for (s, p) in &paths {
        wick_core::checkpoint::write_atomic(p, amat_text(&x, d.dim, &d.indices(*s)).as_bytes())?;
    }
    let counts: Vec<String> = Split::ALL.iter().map(|&s| format!("{} {s}", d.indices(s).len())).collect();
    println!("{}: {} rows ({}) of {} bits, binarize {how}, written to {}", a.data, d.rows, counts.join(", "), d.dim, paths.iter().map(|(_, p)| p.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(ExitCode::SUCCESS)
}

/// Rows `idx` of the 0/1 matrix `x` as `.amat` text: one row per line, values separated by spaces.
fn amat_text(x: &[f32], dim: usize, idx: &[usize]) -> String {
    let mut s = String::with_capacity(idx.len() * dim * 2);
    for &i in idx {
        for (j, &v) in x[i * dim..(i + 1) * dim].iter().enumerate() {
            if j > 0 {
                s.push(' ');
            }
            s.push(if v == 1.0 { '1' } else { '0' });
        }
        s.push('\n');
    }
    s
}
