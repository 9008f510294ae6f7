//! Image datasets for density models and self-supervised pretraining.
//!
//! [`Dataset::load`] takes a built-in name or a path and returns every image of the
//! data set as raw pixel values, one row per image, with a [`Split`] for each row.
//!
//! | spec | what | image | max | threshold |
//! | --- | --- | --- | --- | --- |
//! | `digits` | `data_dir()/digits.csv.gz`: 1,797 UCI optical digits | 8x8 | 16 | 8 |
//! | `mnist5k` | `data_dir()/mnist_5k.csv.gz`: 5,000 MNIST digits, 500 per class | 28x28 | 255 | 128 |
//! | `mnist` | the full MNIST (70,000) from the four IDX files, found by [`mnist_dir`] | 28x28 | 255 | 128 |
//! | `x.csv`, `x.csv.gz` | a CSV file, see below | k x k, or 1 x D | 1, 16 or 255 | max / 2 |
//! | a directory, or its `train-images-idx3-ubyte` | MNIST IDX files | as stored | 255 | 128 |
//! | `binarized_mnist_*.amat`, or their directory | binarized MNIST of the NADE papers | 28x28 | 1 | 0.5 |
//!
//! Any file may be gzip-compressed (recognised by its magic bytes or a `.gz` suffix).
//!
//! # Formats
//!
//! **CSV**: no header line. One image per line: its pixel values, then the label in the
//! last column, separated by commas. Pixels are finite, non-negative numbers; the label
//! is an integer in 0..=255. Every line has the same number of columns. A pixel count
//! that is a square k*k is a row-major k x k image; any other count D is a vector, held as
//! a 1 x D "image" ([`Dataset::is_image`] is false). Blank lines may only trail. The
//! maximum pixel value is taken to be 1 if no pixel exceeds 1, else 16 if none exceeds
//! 16, else 255 if none exceeds 255, else the largest pixel.
//!
//! **MNIST IDX** (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally `.gz`, also
//! accepted with a `.` instead of the `-` before `idx`): big-endian u32 magic
//! `0x00000803` followed by image count, rows and cols for images, `0x00000801` followed
//! by the count for labels, then one unsigned byte per pixel or label. The training
//! file's images become [`Split::Train`] except its last sixth (the last 10,000 of
//! MNIST's 60,000), which becomes [`Split::Valid`]; the t10k images are [`Split::Test`].
//!
//! **Binarized MNIST `.amat`** (`binarized_mnist_{train,valid,test}.amat`): one image per
//! line, its values 0 or 1 separated by spaces (784 for MNIST; any count is accepted, a
//! non-square one as a vector as for CSV).
//! No labels. The split comes from the file name when all three files are present; a
//! lone `.amat` file gets the standard split.
//!
//! # Standard split
//!
//! Data without a split of its own (CSV files, the built-ins, a lone `.amat` file) is
//! split by position: row `i` (0-based, in file order) is [`Split::Test`] if
//! `i % 10 == 0`, [`Split::Valid`] if `i % 10 == 1`, and [`Split::Train`] otherwise:
//! 10% test, 10% valid, 80% train, interleaved so that files sorted by label still give
//! every split every label.
//!
//! # Errors
//!
//! Parse errors are one line naming the file, the line (1-based) or record, and what is
//! wrong, e.g. `data/x.csv line 12: expected 65 columns (as on line 1), found 64`.
//! The parsers never panic, whatever the bytes.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Context, Error, Result};
use crate::{bail, ensure};

/// Which part of a data set a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// The standard split of row `i`: test if `i % 10 == 0`, valid if `i % 10 == 1`,
    /// train otherwise.
    pub fn standard(i: usize) -> Split {
        match i % 10 {
            0 => Split::Test,
            1 => Split::Valid,
            _ => Split::Train,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = Error;

    fn from_str(s: &str) -> Result<Split> {
        match s {
            "train" => Ok(Split::Train),
            "valid" => Ok(Split::Valid),
            "test" => Ok(Split::Test),
            _ => bail!("unknown split '{s}': expected train, valid or test"),
        }
    }
}

/// A loaded image data set: `rows` images of `dim = height * width` pixels each.
#[derive(Clone)]
pub struct Dataset {
    /// `"digits"`, `"mnist5k"`, or the path given to [`Dataset::load`].
    pub name: String,
    pub rows: usize,
    pub dim: usize,
    pub height: usize,
    pub width: usize,
    /// The largest value a pixel can take: 16 for digits, 255 for MNIST, 1 for `.amat`.
    pub max_value: f32,
    /// Raw pixel values, row-major, `rows * dim`.
    pub pixels: Vec<f32>,
    /// One label per row; `None` for `.amat` files.
    pub labels: Option<Vec<u8>>,
    /// One split per row.
    pub split: Vec<Split>,
    /// Binarization threshold: a pixel `>= threshold` becomes 1.
    pub default_threshold: f32,
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Dataset {{ name: {:?}, rows: {}, {}x{}, max_value: {}, labels: {}, threshold: {} }}",
            self.name,
            self.rows,
            self.height,
            self.width,
            self.max_value,
            self.labels.is_some(),
            self.default_threshold
        )
    }
}

const BUILTINS: &[(&str, &str)] = &[
    ("digits", "UCI optical digits: 1,797 8x8 images, pixels 0..16, labels 0..9 (digits.csv.gz)"),
    ("mnist5k", "5,000 MNIST digits, 500 per class: 28x28, pixels 0..255, labels 0..9 (mnist_5k.csv.gz)"),
    ("mnist", "the full MNIST, 50,000 train / 10,000 valid / 10,000 test (IDX files: `wick data fetch mnist`, --data-dir)"),
];

/// The built-in data sets as `(name, one-line description)`, for `wick list`.
pub fn builtin_names() -> &'static [(&'static str, &'static str)] {
    BUILTINS
}

/// Where the built-in data files live: `$WICK_DATA_DIR` if set, else `./data` if it
/// holds `digits.csv.gz`, else the repository's `data/` folder.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WICK_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("data");
    if local.join("digits.csv.gz").is_file() {
        return local;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../data"))
}

/// The platform's per-user cache directory for wick: `$XDG_CACHE_HOME/wick` (else
/// `~/.cache/wick`) on Linux and other Unixes, `~/Library/Caches/wick` on macOS,
/// `%LOCALAPPDATA%\\wick` on Windows. `None` if the home directory is unknown.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = if cfg!(windows) {
        env("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        env("HOME").map(|h| h.join("Library/Caches"))
    } else {
        env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("wick"))
}

/// Where `--data mnist` looks, in order: `--data-dir DIR` (DIR itself or `DIR/mnist`, if
/// given, and then nowhere else), `$WICK_DATA_DIR/mnist`, `cache_dir()/mnist`.
pub fn mnist_candidates(data_dir: Option<&Path>) -> Vec<PathBuf> {
    if let Some(d) = data_dir {
        return vec![d.to_path_buf(), d.join("mnist")];
    }
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os("WICK_DATA_DIR").filter(|d| !d.is_empty()) {
        v.push(PathBuf::from(d).join("mnist"));
    }
    v.extend(cache_dir().map(|c| c.join("mnist")));
    v
}

/// Where `wick data fetch mnist` puts the files when no `--dir` is given: the first
/// automatic place `--data mnist` looks (`$WICK_DATA_DIR/mnist`, else `cache_dir()/mnist`).
pub fn mnist_default_dir() -> Option<PathBuf> {
    mnist_candidates(None).into_iter().next()
}

/// The first of [`mnist_candidates`] that holds the training images file; a missing data set
/// is a one-line error naming the places looked and the fetch command.
pub fn mnist_dir(data_dir: Option<&Path>) -> Result<PathBuf> {
    let places = mnist_candidates(data_dir);
    if let Some(d) = places.iter().find(|d| find_file(d, &IDX_FILES[0].0).is_some()) {
        return Ok(d.clone());
    }
    let shown: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
    let fetch = match data_dir {
        Some(d) => format!("wick data fetch mnist --dir {}", d.display()),
        None => "wick data fetch mnist".to_string(),
    };
    bail!(
        "MNIST not found (looked for train-images-idx3-ubyte[.gz] in {}): download it with `{fetch}`, or point --data-dir at a folder holding the four IDX files",
        if shown.is_empty() { "no folder: set WICK_DATA_DIR or HOME".to_string() } else { shown.join(", ") }
    )
}

const UNKNOWN_HINT: &str =
    "expected digits, mnist5k, mnist, or a path to a .csv/.csv.gz file, an MNIST IDX directory, or .amat files";

impl Dataset {
    /// Load a built-in data set by name, or a data file or directory by path; see the
    /// module documentation for the formats.
    pub fn load(spec: &str) -> Result<Dataset> {
        Dataset::load_from(spec, None)
    }

    /// [`Dataset::load`], with `--data-dir`: where `mnist` is looked for first (only `mnist`
    /// takes one; it is an error for any other spec).
    pub fn load_from(spec: &str, data_dir: Option<&Path>) -> Result<Dataset> {
        if spec == "mnist" {
            return load_idx(&mnist_dir(data_dir)?, "mnist");
        }
        if let Some(d) = data_dir {
            bail!("--data-dir {} applies to --data mnist only; for '{spec}' give the path in --data", d.display());
        }
        match spec {
            "digits" => return load_builtin("digits", "digits.csv.gz", 8, 16.0, 8.0),
            "mnist5k" => return load_builtin("mnist5k", "mnist_5k.csv.gz", 28, 255.0, 128.0),
            _ => {}
        }
        let path = Path::new(spec);
        if path.is_dir() {
            return load_dir(path, spec);
        }
        let kind = path.file_name().and_then(|n| n.to_str()).and_then(FileKind::of);
        if !path.exists() {
            if kind.is_some() || spec.contains(['/', '\\']) {
                bail!("data file '{spec}' not found");
            }
            bail!("unknown dataset '{spec}': {UNKNOWN_HINT}");
        }
        match kind {
            Some(FileKind::Csv) => load_csv(path, spec),
            Some(FileKind::Amat) => load_amat_file(path, spec),
            Some(FileKind::Idx) => {
                let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                load_idx(dir, spec)
            }
            None => bail!("unknown dataset '{spec}': {UNKNOWN_HINT}"),
        }
    }

    /// Whether the rows are images (at least 2x2) that can be drawn as grids and completed
    /// by region; false for vectors (1 x D), which are logged as text instead.
    pub fn is_image(&self) -> bool {
        self.height >= 2 && self.width >= 2
    }

    /// The rows of split `s`, in order.
    pub fn indices(&self, s: Split) -> Vec<usize> {
        (0..self.rows).filter(|&i| self.split[i] == s).collect()
    }

    /// All pixels as 0.0/1.0: 1 where `pixel >= threshold` (default: `default_threshold`).
    pub fn binarized(&self, threshold: Option<f32>) -> Vec<f32> {
        let t = threshold.unwrap_or(self.default_threshold);
        self.pixels.iter().map(|&p| if p >= t { 1.0 } else { 0.0 }).collect()
    }

    /// All pixels divided by `max_value`, in [0, 1].
    pub fn scaled(&self) -> Vec<f32> {
        let m = self.max_value;
        self.pixels.iter().map(|&p| p / m).collect()
    }

    /// Rows `idx` of the row-major `rows x dim` matrix `values`, concatenated.
    ///
    /// Panics if an index is out of range.
    pub fn gather(values: &[f32], dim: usize, idx: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(idx.len() * dim);
        for &i in idx {
            out.extend_from_slice(&values[i * dim..(i + 1) * dim]);
        }
        out
    }

    /// The rows of split `s` of `values` (one row per example, e.g. [`Dataset::binarized`]) as
    /// an `[n, dim]` tensor on `device`.
    pub fn split_tensor(&self, values: &[f32], s: Split, device: &candle_core::Device) -> Result<candle_core::Tensor> {
        let idx = self.indices(s);
        Ok(candle_core::Tensor::from_vec(Dataset::gather(values, self.dim, &idx), (idx.len(), self.dim), device)?)
    }

    /// Square images (or 1 x D vectors) with the standard split.
    fn from_table(name: &str, t: Table, max_value: f32, threshold: f32) -> Dataset {
        let (height, width) = shape_of(t.dim);
        Dataset {
            name: name.to_string(),
            rows: t.rows,
            dim: t.dim,
            height,
            width,
            max_value,
            pixels: t.pixels,
            labels: t.labels,
            split: (0..t.rows).map(Split::standard).collect(),
            default_threshold: threshold,
        }
    }
}

/// Images parsed from one file: `rows` rows of `dim` pixels, before any split.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub rows: usize,
    pub dim: usize,
    /// Row-major, `rows * dim`.
    pub pixels: Vec<f32>,
    /// One per row; `None` for `.amat` files.
    pub labels: Option<Vec<u8>>,
}

/// Images parsed from an IDX images file.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    /// Row-major, `count * rows * cols`.
    pub pixels: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum FileKind {
    Csv,
    Amat,
    Idx,
}

impl FileKind {
    fn of(file_name: &str) -> Option<FileKind> {
        let n = file_name.to_ascii_lowercase();
        let n = n.strip_suffix(".gz").unwrap_or(&n);
        if n.ends_with(".csv") {
            Some(FileKind::Csv)
        } else if n.ends_with(".amat") {
            Some(FileKind::Amat)
        } else if n.ends_with("idx3-ubyte") || n.ends_with("idx1-ubyte") {
            Some(FileKind::Idx)
        } else {
            None
        }
    }
}

fn load_builtin(name: &str, file: &str, side: usize, max: f32, threshold: f32) -> Result<Dataset> {
    let path = data_dir().join(file);
    ensure!(
        path.is_file(),
        "built-in dataset '{name}' needs {}, which was not found: set WICK_DATA_DIR to the folder holding {file}",
        path.display()
    );
    let shown = path.display().to_string();
    let t = parse_csv(&read_bytes(&path)?, &shown)?;
    ensure!(t.dim == side * side, "{shown}: expected {} pixel columns for '{name}', found {}", side * side, t.dim);
    if let Some(p) = t.pixels.iter().find(|&&p| p > max) {
        bail!("{shown}: pixel value {p} above the maximum {max} of '{name}'");
    }
    Ok(Dataset::from_table(name, t, max, threshold))
}

fn load_csv(path: &Path, spec: &str) -> Result<Dataset> {
    let t = parse_csv(&read_bytes(path)?, spec)?;
    let peak = t.pixels.iter().fold(0f32, |m, &p| m.max(p));
    let max = match peak {
        p if p <= 1.0 => 1.0,
        p if p <= 16.0 => 16.0,
        p if p <= 255.0 => 255.0,
        p => p,
    };
    Ok(Dataset::from_table(spec, t, max, max / 2.0))
}

fn load_dir(dir: &Path, spec: &str) -> Result<Dataset> {
    if IDX_FILES.iter().any(|(stems, _)| find_file(dir, stems).is_some()) {
        return load_idx(dir, spec);
    }
    if AMAT_FILES.iter().any(|(_, f)| dir.join(f).is_file()) {
        return load_amat_dir(dir, spec);
    }
    bail!(
        "directory '{spec}' holds neither MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, \
         t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally .gz) nor binarized_mnist_{{train,valid,test}}.amat"
    )
}

/// The four MNIST IDX files (each under either spelling), and what each is.
const IDX_FILES: [([&str; 2], &str); 4] = [
    (["train-images-idx3-ubyte", "train-images.idx3-ubyte"], "train-images-idx3-ubyte"),
    (["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"], "train-labels-idx1-ubyte"),
    (["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"], "t10k-images-idx3-ubyte"),
    (["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"], "t10k-labels-idx1-ubyte"),
];

/// `dir/stem` or `dir/stem.gz` for the first stem that exists.
fn find_file(dir: &Path, stems: &[&str]) -> Option<PathBuf> {
    stems.iter().flat_map(|s| [dir.join(s), dir.join(format!("{s}.gz"))]).find(|p| p.is_file())
}

fn load_idx(dir: &Path, spec: &str) -> Result<Dataset> {
    let found: Vec<Option<PathBuf>> = IDX_FILES.iter().map(|(stems, _)| find_file(dir, stems)).collect();
    let missing: Vec<&str> = IDX_FILES.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|((_, n), _)| *n).collect();
    ensure!(
        missing.is_empty(),
        "MNIST IDX directory '{}': missing {} (each optionally .gz)",
        dir.display(),
        missing.join(", ")
    );
    let paths: Vec<PathBuf> = found.into_iter().flatten().collect();
    let (train, train_labels) = read_idx_pair(&paths[0], &paths[1])?;
    let (test, test_labels) = read_idx_pair(&paths[2], &paths[3])?;
    ensure!(
        (test.rows, test.cols) == (train.rows, train.cols),
        "{}: images are {}x{}, but {} has {}x{}",
        paths[2].display(),
        test.rows,
        test.cols,
        paths[0].display(),
        train.rows,
        train.cols
    );
    let rows = train.count + test.count;
    ensure!(rows > 0, "MNIST IDX directory '{}': the files hold no images", dir.display());
    let n_valid = train.count / 6;
    let mut split = vec![Split::Train; train.count - n_valid];
    split.resize(train.count, Split::Valid);
    split.resize(rows, Split::Test);
    let pixels = train.pixels.iter().chain(&test.pixels).map(|&p| f32::from(p)).collect();
    let mut labels = train_labels;
    labels.extend(test_labels);
    Ok(Dataset {
        name: spec.to_string(),
        rows,
        dim: train.rows * train.cols,
        height: train.rows,
        width: train.cols,
        max_value: 255.0,
        pixels,
        labels: Some(labels),
        split,
        default_threshold: 128.0,
    })
}

fn read_idx_pair(images: &Path, labels: &Path) -> Result<(IdxImages, Vec<u8>)> {
    let (img_name, lbl_name) = (images.display().to_string(), labels.display().to_string());
    let x = parse_idx_images(&read_bytes(images)?, &img_name)?;
    let y = parse_idx_labels(&read_bytes(labels)?, &lbl_name)?;
    ensure!(y.len() == x.count, "{lbl_name}: {} labels, but {img_name} holds {} images", y.len(), x.count);
    Ok((x, y))
}

const AMAT_FILES: [(Split, &str); 3] = [
    (Split::Train, "binarized_mnist_train.amat"),
    (Split::Valid, "binarized_mnist_valid.amat"),
    (Split::Test, "binarized_mnist_test.amat"),
];

fn load_amat_dir(dir: &Path, spec: &str) -> Result<Dataset> {
    let files: Vec<(Split, PathBuf)> = AMAT_FILES.iter().map(|&(s, f)| (s, dir.join(f))).collect();
    let missing: Vec<&str> =
        AMAT_FILES.iter().zip(&files).filter(|(_, (_, p))| !p.is_file()).map(|((_, f), _)| *f).collect();
    ensure!(missing.is_empty(), "binarized MNIST directory '{spec}': missing {}", missing.join(", "));
    load_amat_files(spec, &files)
}

/// One `.amat` file: with its train/valid/test siblings if all three exist, else alone
/// with the standard split.
fn load_amat_file(path: &Path, spec: &str) -> Result<Dataset> {
    if let Some(files) = amat_siblings(path) {
        return load_amat_files(spec, &files);
    }
    let t = parse_amat(&read_bytes(path)?, spec)?;
    Ok(Dataset::from_table(spec, t, 1.0, 0.5))
}

/// For `.../prefix_{train,valid,test}suffix`, the three sibling paths if all exist.
fn amat_siblings(path: &Path) -> Option<Vec<(Split, PathBuf)>> {
    let name = path.file_name()?.to_str()?;
    let (pos, word) = Split::ALL.iter().filter_map(|s| name.rfind(s.as_str()).map(|p| (p, s.as_str()))).max()?;
    let (head, tail) = (&name[..pos], &name[pos + word.len()..]);
    let files: Vec<(Split, PathBuf)> =
        Split::ALL.iter().map(|&s| (s, path.with_file_name(format!("{head}{s}{tail}")))).collect();
    files.iter().all(|(_, p)| p.is_file()).then_some(files)
}

fn load_amat_files(spec: &str, files: &[(Split, PathBuf)]) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut split = Vec::new();
    let mut dim = None;
    for (s, path) in files {
        let shown = path.display().to_string();
        let t = parse_amat(&read_bytes(path)?, &shown)?;
        if let Some((d, first)) = &dim {
            ensure!(t.dim == *d, "{shown}: {} values per line, but {first} has {d}", t.dim);
        } else {
            dim = Some((t.dim, shown));
        }
        pixels.extend(t.pixels);
        split.extend(std::iter::repeat_n(*s, t.rows));
    }
    let dim = dim.map_or(0, |(d, _)| d);
    let (height, width) = shape_of(dim);
    Ok(Dataset {
        name: spec.to_string(),
        rows: split.len(),
        dim,
        height,
        width,
        max_value: 1.0,
        pixels,
        labels: None,
        split,
        default_threshold: 0.5,
    })
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A file's bytes, decompressed if it is gzip (by magic bytes or a `.gz` suffix).
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::new(format!("data file '{shown}' not found")),
        _ => Error::from(e).context(&shown),
    })?;
    if bytes.starts_with(&GZIP_MAGIC) || shown.ends_with(".gz") {
        gunzip(&bytes, &shown)
    } else {
        Ok(bytes)
    }
}

/// Decompress a gzip file (one or more members); `name` is for error messages.
pub fn gunzip(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    ensure!(!bytes.is_empty(), "{name}: empty file");
    ensure!(bytes.starts_with(&GZIP_MAGIC), "{name}: not a gzip file (it does not start with the gzip magic 1f 8b)");
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .with_context(|| format!("{name}: truncated or corrupt gzip stream"))?;
    Ok(out)
}

/// Parse CSV text (see the module documentation); `name` is for error messages.
pub fn parse_csv(bytes: &[u8], name: &str) -> Result<Table> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut cols = 0; // set by the first line
    let mut first_line = 0;
    let mut blank_since = None;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut cells: Vec<&[u8]> = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        if line.trim_ascii().is_empty() {
            blank_since.get_or_insert(lineno);
            continue;
        }
        if let Some(b) = blank_since {
            bail!("{name} line {b}: blank line before the end of the data");
        }
        cells.clear();
        cells.extend(line.split(|&b| b == b','));
        if cols == 0 {
            ensure!(cells.len() >= 2, "{name} line {lineno}: expected pixel columns then a label, found 1 column");
            cols = cells.len();
            first_line = lineno;
        } else {
            ensure!(
                cells.len() == cols,
                "{name} line {lineno}: expected {cols} columns (as on line {first_line}), found {}",
                cells.len()
            );
        }
        let Some((label_cell, pixel_cells)) = cells.split_last() else { continue };
        for (c, cell) in pixel_cells.iter().enumerate() {
            let v = number(cell).map_err(|why| {
                let hint = if lineno == first_line { " (the file must have no header line)" } else { "" };
                Error::new(format!("{name} line {lineno} column {}: {}{hint}", c + 1, why.describe(cell)))
            })?;
            if v < 0.0 {
                bail!("{name} line {lineno}: negative pixel value {v} (column {})", c + 1);
            }
            pixels.push(v);
        }
        match number(label_cell) {
            Ok(v) if v.fract() == 0.0 && (0.0..=255.0).contains(&v) => labels.push(v as u8),
            _ => bail!("{name} line {lineno} column {cols}: label '{}' is not an integer in 0..=255", show(label_cell)),
        }
    }
    ensure!(cols > 0, "{name}: empty file");
    Ok(Table { rows: labels.len(), dim: cols - 1, pixels, labels: Some(labels) })
}

/// Parse binarized-MNIST `.amat` text (see the module documentation); `name` is for
/// error messages.
pub fn parse_amat(bytes: &[u8], name: &str) -> Result<Table> {
    let mut dim = 0; // set by the first line
    let mut first_line = 0;
    let mut blank_since = None;
    let mut pixels = Vec::new();
    let mut rows = 0;
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        if line.trim_ascii().is_empty() {
            blank_since.get_or_insert(lineno);
            continue;
        }
        if let Some(b) = blank_since {
            bail!("{name} line {b}: blank line before the end of the data");
        }
        let start = pixels.len();
        for (k, tok) in line.split(u8::is_ascii_whitespace).filter(|t| !t.is_empty()).enumerate() {
            let v = match tok {
                b"0" => 0.0,
                b"1" => 1.0,
                _ => match number(tok) {
                    Ok(v) if v == 0.0 || v == 1.0 => v,
                    _ => bail!("{name} line {lineno} value {}: '{}' is not 0 or 1", k + 1, show(tok)),
                },
            };
            pixels.push(v);
        }
        let count = pixels.len() - start;
        if dim == 0 {
            dim = count;
            first_line = lineno;
        } else {
            ensure!(
                count == dim,
                "{name} line {lineno}: expected {dim} values (as on line {first_line}), found {count}"
            );
        }
        rows += 1;
    }
    ensure!(rows > 0, "{name}: empty file");
    Ok(Table { rows, dim, pixels, labels: None })
}

/// Parse an IDX images file (magic `0x00000803`); `name` is for error messages.
pub fn parse_idx_images(bytes: &[u8], name: &str) -> Result<IdxImages> {
    let (dims, payload) = idx_header(bytes, name, 3, "images")?;
    let &[count, rows, cols] = dims.as_slice() else { bail!("{name}: bad IDX header") };
    ensure!(count == 0 || (rows > 0 && cols > 0), "{name}: images of {rows}x{cols} pixels are empty");
    Ok(IdxImages { count, rows, cols, pixels: payload.to_vec() })
}

/// Parse an IDX labels file (magic `0x00000801`); `name` is for error messages.
pub fn parse_idx_labels(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    let (_, payload) = idx_header(bytes, name, 1, "labels")?;
    Ok(payload.to_vec())
}

/// Check an unsigned-byte IDX header with `ndims` dimensions against the file length;
/// return the dimensions and the data after the header.
fn idx_header<'a>(bytes: &'a [u8], name: &str, ndims: usize, what: &str) -> Result<(Vec<usize>, &'a [u8])> {
    let be_u32 = |at: usize| -> Option<u32> {
        let &[a, b, c, d] = bytes.get(at..at + 4)? else { return None };
        Some(u32::from_be_bytes([a, b, c, d]))
    };
    ensure!(!bytes.is_empty(), "{name}: empty file");
    let header = 4 + 4 * ndims;
    let expected_magic = 0x0800 | ndims as u32;
    let Some(magic) = be_u32(0) else {
        bail!("{name}: file holds {} bytes, too short for an IDX header ({header} bytes)", bytes.len())
    };
    ensure!(
        magic == expected_magic,
        "{name}: bad IDX magic 0x{magic:08x} (expected 0x{expected_magic:08x} for {what})"
    );
    let dims: Option<Vec<u32>> = (0..ndims).map(|k| be_u32(4 + 4 * k)).collect();
    let Some(dims) = dims else {
        bail!("{name}: file holds {} bytes, too short for an IDX header ({header} bytes)", bytes.len())
    };
    let expected = header as u128 + dims.iter().map(|&d| u128::from(d)).product::<u128>();
    ensure!(bytes.len() as u128 == expected, "{name}: file holds {} bytes, header says {expected}", bytes.len());
    Ok((dims.iter().map(|&d| d as usize).collect(), bytes.get(header..).unwrap_or_default()))
}

/// Why a cell is not a usable number.
#[derive(Clone, Copy, Debug)]
enum BadCell {
    Empty,
    NotNumber,
    NotFinite,
}

impl BadCell {
    fn describe(self, cell: &[u8]) -> String {
        match self {
            BadCell::Empty => "empty cell".to_string(),
            BadCell::NotNumber => format!("'{}' is not a number", show(cell)),
            BadCell::NotFinite => format!("'{}' is not a finite number", show(cell)),
        }
    }
}

/// A finite number, with a fast path for plain non-negative integers.
fn number(cell: &[u8]) -> std::result::Result<f32, BadCell> {
    let cell = cell.trim_ascii();
    if cell.is_empty() {
        return Err(BadCell::Empty);
    }
    if cell.len() <= 9 && cell.iter().all(u8::is_ascii_digit) {
        return Ok(cell.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) as f32);
    }
    let v: f32 = std::str::from_utf8(cell).ok().and_then(|s| s.parse().ok()).ok_or(BadCell::NotNumber)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(BadCell::NotFinite)
    }
}

/// A cell for an error message: trimmed, control characters escaped, at most 24 chars.
fn show(cell: &[u8]) -> String {
    let text = String::from_utf8_lossy(cell.trim_ascii());
    let mut out: String = text
        .chars()
        .take(24)
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect();
    if text.chars().nth(24).is_some() {
        out.push_str("...");
    }
    out
}

/// `k` if `dim == k * k` for some `k >= 1`.
/// (k, k) for a square count k*k, else (1, D): a vector.
fn shape_of(dim: usize) -> (usize, usize) {
    square_side(dim).map_or((1, dim), |k| (k, k))
}

fn square_side(dim: usize) -> Option<usize> {
    let k = (dim as f64).sqrt().round() as usize;
    (k > 0 && k.checked_mul(k) == Some(dim)).then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::SeqCst);
            let dir = std::env::temp_dir().join(format!("wick-data-{}-{tag}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// Write `bytes` to `name` (gzip-compressed if `name` ends in `.gz`); return the
        /// path as a string.
        fn write(&self, name: &str, bytes: &[u8]) -> String {
            let path = self.0.join(name);
            let data = if name.ends_with(".gz") { gz(bytes) } else { bytes.to_vec() };
            std::fs::write(&path, data).unwrap();
            path.to_str().unwrap().to_string()
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn err<T: fmt::Debug>(r: Result<T>) -> String {
        let e = r.expect_err("expected an error").to_string();
        assert!(!e.contains('\n'), "multi-line error: {e}");
        e
    }

    fn assert_err<T: fmt::Debug>(r: Result<T>, want: &str) {
        let e = err(r);
        assert!(e.contains(want), "error {e:?} does not contain {want:?}");
    }

    fn counts(d: &Dataset) -> [usize; 3] {
        Split::ALL.map(|s| d.indices(s).len())
    }

    fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [0x803, count, rows, cols] {
            b.extend(v.to_be_bytes());
        }
        b.extend(pixels);
        b
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(0x801u32.to_be_bytes());
        b.extend((labels.len() as u32).to_be_bytes());
        b.extend(labels);
        b
    }

    // ---- built-in data sets ----

    #[test]
    fn digits_loads() {
        let d = Dataset::load("digits").unwrap();
        assert_eq!((d.name.as_str(), d.rows, d.dim, d.height, d.width), ("digits", 1797, 64, 8, 8));
        assert_eq!((d.max_value, d.default_threshold), (16.0, 8.0));
        assert_eq!(d.pixels.len(), 1797 * 64);
        let labels = d.labels.as_ref().unwrap();
        assert_eq!(labels.len(), 1797);
        assert!(labels.iter().all(|&l| l <= 9));
        assert_eq!(labels[0], 0);
        assert_eq!(&d.pixels[..8], &[0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]);
        assert_eq!(counts(&d), [1437, 180, 180]);
        assert!(d.pixels.iter().all(|&p| (0.0..=16.0).contains(&p) && p.fract() == 0.0));
        let b = d.binarized(None);
        assert!(b.iter().zip(&d.pixels).all(|(&b, &p)| b == if p >= 8.0 { 1.0 } else { 0.0 }));
        let ones = b.iter().filter(|&&v| v == 1.0).count();
        assert!(ones > b.len() / 5 && ones < b.len() / 2, "{ones} of {} on", b.len());
        assert!(d.binarized(Some(0.5)).iter().filter(|&&v| v == 1.0).count() > ones);
        let s = d.scaled();
        assert!(s.iter().all(|&v| (0.0..=1.0).contains(&v)) && s.contains(&1.0));
    }

    #[test]
    fn mnist5k_loads() {
        let t0 = std::time::Instant::now();
        let d = Dataset::load("mnist5k").unwrap();
        eprintln!("mnist5k loaded in {:?}", t0.elapsed());
        assert_eq!((d.name.as_str(), d.rows, d.dim, d.height, d.width), ("mnist5k", 5000, 784, 28, 28));
        assert_eq!((d.max_value, d.default_threshold), (255.0, 128.0));
        assert_eq!(d.pixels.len(), 5000 * 784);
        let mut per_class = [0; 10];
        for &l in d.labels.as_ref().unwrap() {
            per_class[l as usize] += 1;
        }
        assert_eq!(per_class, [500; 10]);
        assert_eq!(counts(&d), [4000, 500, 500]);
        let peak = d.pixels.iter().fold(0f32, |m, &p| m.max(p));
        assert_eq!(peak, 255.0);
        let b = d.binarized(None);
        assert!(b.iter().zip(&d.pixels).all(|(&b, &p)| b == if p >= 128.0 { 1.0 } else { 0.0 }));
        let ones = b.iter().filter(|&&v| v == 1.0).count() as f64 / b.len() as f64;
        assert!((0.05..0.3).contains(&ones), "fraction on {ones}");
    }

    #[test]
    fn data_dir_holds_the_builtins() {
        assert!(data_dir().join("digits.csv.gz").is_file(), "{}", data_dir().display());
        assert!(data_dir().join("mnist_5k.csv.gz").is_file());
        let names: Vec<&str> = builtin_names().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["digits", "mnist5k", "mnist"]);
    }

    // ---- splits and helpers ----

    #[test]
    fn splits_parse_and_print() {
        for s in Split::ALL {
            assert_eq!(s.to_string().parse::<Split>().unwrap(), s);
        }
        assert_eq!("valid".parse::<Split>().unwrap(), Split::Valid);
        assert_err("training".parse::<Split>(), "unknown split 'training': expected train, valid or test");
        let std: Vec<Split> = (0..12).map(Split::standard).collect();
        assert_eq!(&std[..3], &[Split::Test, Split::Valid, Split::Train]);
        assert_eq!(&std[10..], &[Split::Test, Split::Valid]);
    }

    #[test]
    fn gather_picks_rows() {
        let m: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(Dataset::gather(&m, 3, &[3, 0, 3]), [9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 9.0, 10.0, 11.0]);
        assert!(Dataset::gather(&m, 3, &[]).is_empty());
    }

    // ---- CSV ----

    #[test]
    fn csv_parses() {
        let t = parse_csv(b"1,2,3,4,7\r\n0, 0.5 ,16,0,9\n\n \n", "t.csv").unwrap();
        assert_eq!((t.rows, t.dim), (2, 4));
        assert_eq!(t.pixels, [1.0, 2.0, 3.0, 4.0, 0.0, 0.5, 16.0, 0.0]);
        assert_eq!(t.labels, Some(vec![7, 9]));
        let t = parse_csv(b"\xEF\xBB\xBF5,1e1,2", "bom.csv").unwrap();
        assert_eq!((t.pixels, t.labels), (vec![5.0, 10.0], Some(vec![2])));
    }

    #[test]
    fn csv_files_load_with_detected_range() {
        let dir = TempDir::new("csv");
        let rows: String = (0..20).map(|i| format!("0,1,1,0,{}\n", i % 3)).collect();
        let p = dir.write("bin.csv", rows.as_bytes());
        let d = Dataset::load(&p).unwrap();
        assert_eq!((d.name.as_str(), d.rows, d.dim, d.height, d.width), (p.as_str(), 20, 4, 2, 2));
        assert_eq!((d.max_value, d.default_threshold), (1.0, 0.5));
        assert_eq!(counts(&d), [16, 2, 2]);
        assert_eq!(d.indices(Split::Test), [0, 10]);
        assert_eq!(d.indices(Split::Valid), [1, 11]);
        assert_eq!(d.binarized(None)[..4], [0.0, 1.0, 1.0, 0.0]);

        let p = dir.write("grey.csv.gz", b"0,16,3,4,1\n2,2,2,2,0\n");
        let d = Dataset::load(&p).unwrap();
        assert_eq!((d.rows, d.max_value, d.default_threshold), (2, 16.0, 8.0));
        assert_eq!(d.scaled()[1], 1.0);

        let p = dir.write("bytes.csv", b"0,17,200,4,1\n");
        let d = Dataset::load(&p).unwrap();
        assert_eq!((d.max_value, d.default_threshold), (255.0, 127.5));
        assert_eq!(d.binarized(None), [0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn csv_errors() {
        let two = b"1,2,3,4,5\n";
        let truncated = [&two[..], &two[..], b"1,2,3,4"].concat();
        assert_err(
            parse_csv(&truncated, "data/x.csv"),
            "data/x.csv line 3: expected 5 columns (as on line 1), found 4",
        );
        assert_err(parse_csv(b"1,2,3,4,5\n1,2,abc,4,5\n", "x.csv"), "x.csv line 2 column 3: 'abc' is not a number");
        assert_err(parse_csv(b"1,2,3,4,5\n1,2,,4,5\n", "x.csv"), "x.csv line 2 column 3: empty cell");
        assert_err(parse_csv(b"1,2,3,4,5\n1,2,3,4,5\n1,-1,3,4,5\n", "x.csv"), "x.csv line 3: negative pixel value -1");
        assert_err(parse_csv(b"1,nan,3,4,5\n", "x.csv"), "line 1 column 2: 'nan' is not a finite number");
        assert_err(parse_csv(b"1,2,inf,4,5\n", "x.csv"), "column 3: 'inf' is not a finite number");
        assert_err(parse_csv(b"1,2,3,1e40,0\n", "x.csv"), "column 4: '1e40' is not a finite number");
        assert_err(
            parse_csv(b"p0,p1,p2,p3,label\n", "x.csv"),
            "'p0' is not a number (the file must have no header line)",
        );
        assert_err(parse_csv(b"", "x.csv"), "x.csv: empty file");
        assert_err(parse_csv(b"\n \r\n", "x.csv"), "x.csv: empty file");
        assert_err(parse_csv(b"1,2\n\n3,4\n", "x.csv"), "x.csv line 2: blank line before the end of the data");
        assert_err(parse_csv(b"12\n", "x.csv"), "x.csv line 1: expected pixel columns then a label, found 1 column");
        for bad in ["3.5", "256", "-1", "x", "", "nan"] {
            let line = format!("1,2,3,4,{bad}\n");
            assert_err(parse_csv(line.as_bytes(), "x.csv"), &format!("x.csv line 1 column 5: label '{bad}' is not"));
        }
        assert_err(parse_csv(b"1,2,\x01\xffzz,4,5\n", "x.csv"), "'\\u{1}\u{fffd}zz' is not a number");

        let dir = TempDir::new("csv-err");
        let p = dir.write("sq.csv", b"1,2,3,0\n");
        let d = Dataset::load(&p).unwrap();
        assert_eq!((d.dim, d.height, d.width, d.is_image()), (3, 1, 3, false));
        let p = dir.write("bad.csv.gz", b"1,2,3,4,0\n");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 6]).unwrap();
        assert_err(Dataset::load(&p), &format!("{p}: truncated or corrupt gzip stream"));
        let p = dir.write("plain.csv.gz", b"1,2,3,4,0\n");
        std::fs::write(&p, b"1,2,3,4,0\n").unwrap();
        assert_err(Dataset::load(&p), "plain.csv.gz: not a gzip file");
        let p = dir.write("empty.csv", b"");
        assert_err(Dataset::load(&p), "empty.csv: empty file");
    }

    #[test]
    fn unknown_specs_are_explained() {
        assert_err(
            Dataset::load("foo"),
            "unknown dataset 'foo': expected digits, mnist5k, mnist, or a path to a .csv/.csv.gz file, an MNIST IDX directory, or .amat files",
        );
        assert_err(Dataset::load("x.csv"), "data file 'x.csv' not found");
        assert_err(Dataset::load("no/such/dir"), "data file 'no/such/dir' not found");
        let dir = TempDir::new("unknown");
        let p = dir.write("notes.txt", b"hello");
        assert_err(Dataset::load(&p), &format!("unknown dataset '{p}'"));
        assert_err(Dataset::load(dir.path()), "holds neither MNIST IDX files");
    }

    // ---- MNIST IDX ----

    /// 12 training images of 2x3 pixels (pixel value = image index) and 3 test images.
    fn write_mnist(dir: &TempDir, gz_suffix: &str) {
        let train: Vec<u8> = (0..12u8).flat_map(|i| [i; 6]).collect();
        let test: Vec<u8> = (100..103u8).flat_map(|i| [i; 6]).collect();
        dir.write(&format!("train-images-idx3-ubyte{gz_suffix}"), &idx_images(12, 2, 3, &train));
        dir.write("train-labels-idx1-ubyte", &idx_labels(&(0..12).map(|i| i % 10).collect::<Vec<_>>()));
        dir.write(&format!("t10k-images-idx3-ubyte{gz_suffix}"), &idx_images(3, 2, 3, &test));
        dir.write("t10k-labels-idx1-ubyte.gz", &idx_labels(&[7, 8, 9]));
    }

    #[test]
    fn idx_directory_loads() {
        for gz_suffix in ["", ".gz"] {
            let dir = TempDir::new("idx");
            write_mnist(&dir, gz_suffix);
            let d = Dataset::load(dir.path()).unwrap();
            assert_eq!((d.rows, d.dim, d.height, d.width), (15, 6, 2, 3));
            assert_eq!((d.max_value, d.default_threshold), (255.0, 128.0));
            assert_eq!(counts(&d), [10, 2, 3]);
            assert_eq!(d.indices(Split::Valid), [10, 11]);
            assert_eq!(d.indices(Split::Test), [12, 13, 14]);
            assert_eq!(&d.labels.as_ref().unwrap()[10..], &[0, 1, 7, 8, 9]);
            assert_eq!(&d.pixels[6..12], &[1.0; 6]);
            assert_eq!(&d.pixels[14 * 6..], &[102.0; 6]);
            assert_eq!(d.binarized(None)[14 * 6], 0.0);

            let images = format!("{}/train-images-idx3-ubyte{gz_suffix}", dir.path());
            let again = Dataset::load(&images).unwrap();
            assert_eq!((again.name, again.pixels), (images, d.pixels));
        }
    }

    #[test]
    fn mnist_is_looked_up_in_data_dir_then_its_mnist_subfolder() {
        let dir = TempDir::new("mnist-lookup");
        let missing = mnist_dir(Some(&dir.0)).unwrap_err().to_string();
        assert!(missing.starts_with("MNIST not found (looked for train-images-idx3-ubyte[.gz] in "), "{missing}");
        assert!(missing.contains(&format!("download it with `wick data fetch mnist --dir {}`", dir.path())), "{missing}");
        assert!(!missing.contains('\n'));
        std::fs::create_dir_all(dir.0.join("mnist")).unwrap();
        let sub = TempDir(dir.0.join("mnist"));
        write_mnist(&sub, ".gz");
        assert_eq!(mnist_dir(Some(&dir.0)).unwrap(), dir.0.join("mnist"));
        let d = Dataset::load_from("mnist", Some(&dir.0)).unwrap();
        assert_eq!((d.name.as_str(), d.rows, counts(&d)), ("mnist", 15, [10, 2, 3]));
        write_mnist(&dir, "");
        assert_eq!(mnist_dir(Some(&dir.0)).unwrap(), dir.0);
        std::mem::forget(sub); // removed with dir
        assert_err(Dataset::load_from("digits", Some(&dir.0)), "applies to --data mnist only");
        let cands = mnist_candidates(None);
        assert!(cands.iter().all(|c| c.ends_with("mnist")), "{cands:?}");
    }

    #[test]
    fn idx_errors() {
        assert_err(
            parse_idx_images(&[0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0], "train-images-idx3-ubyte"),
            "train-images-idx3-ubyte: bad IDX magic 0x12345678 (expected 0x00000803 for images)",
        );
        assert_err(
            parse_idx_labels(&idx_images(0, 1, 1, &[]), "l"),
            "l: bad IDX magic 0x00000803 (expected 0x00000801 for labels)",
        );
        let mut short = idx_images(60000, 28, 28, &[0; 984]);
        assert_eq!(short.len(), 1000);
        assert_err(parse_idx_images(&short, "imgs"), "imgs: file holds 1000 bytes, header says 47040016");
        short.truncate(10);
        assert_err(
            parse_idx_images(&short, "imgs"),
            "imgs: file holds 10 bytes, too short for an IDX header (16 bytes)",
        );
        assert_err(parse_idx_images(&[8, 0], "imgs"), "too short for an IDX header");
        assert_err(parse_idx_images(&[], "imgs"), "imgs: empty file");
        assert_err(parse_idx_images(&idx_images(1, 0, 5, &[]), "imgs"), "images of 0x5 pixels are empty");
        assert_err(
            parse_idx_labels(&[&idx_labels(&[1, 2])[..], &[3]].concat(), "l"),
            "l: file holds 11 bytes, header says 10",
        );
        assert_eq!(parse_idx_labels(&idx_labels(&[4, 5]), "l").unwrap(), [4, 5]);

        let dir = TempDir::new("idx-err");
        write_mnist(&dir, "");
        dir.write("train-labels-idx1-ubyte", &idx_labels(&[1; 11]));
        assert_err(Dataset::load(dir.path()), "train-labels-idx1-ubyte: 11 labels, but");
        assert_err(Dataset::load(dir.path()), "train-images-idx3-ubyte holds 12 images");
        std::fs::remove_file(dir.0.join("train-labels-idx1-ubyte")).unwrap();
        std::fs::remove_file(dir.0.join("t10k-labels-idx1-ubyte.gz")).unwrap();
        assert_err(
            Dataset::load(dir.path()),
            "missing train-labels-idx1-ubyte, t10k-labels-idx1-ubyte (each optionally .gz)",
        );

        let dir = TempDir::new("idx-size");
        write_mnist(&dir, "");
        dir.write("t10k-images-idx3-ubyte", &idx_images(1, 3, 2, &[0; 6]));
        dir.write("t10k-labels-idx1-ubyte.gz", &idx_labels(&[1]));
        assert_err(Dataset::load(dir.path()), "images are 3x2, but");
    }

    // ---- binarized MNIST .amat ----

    fn amat_lines(n: usize, value: &str) -> String {
        (0..n).map(|i| format!("0 1 {value} {}\n", i % 2)).collect()
    }

    #[test]
    fn amat_parses() {
        let t = parse_amat(b"0 1 1 0\r\n1  1\t0 0\n\n", "a.amat").unwrap();
        assert_eq!((t.rows, t.dim, t.labels), (2, 4, None));
        assert_eq!(t.pixels, [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(parse_amat(b"1.0 0.0 0 1", "a").unwrap().pixels, [1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn amat_files_load() {
        let dir = TempDir::new("amat");
        for (split, file) in AMAT_FILES {
            let n = match split {
                Split::Train => 5,
                Split::Valid => 2,
                Split::Test => 3,
            };
            dir.write(file, amat_lines(n, "1").as_bytes());
        }
        let d = Dataset::load(dir.path()).unwrap();
        assert_eq!((d.rows, d.dim, d.height, d.width, d.labels.is_none()), (10, 4, 2, 2, true));
        assert_eq!((d.max_value, d.default_threshold), (1.0, 0.5));
        assert_eq!(counts(&d), [5, 2, 3]);
        assert_eq!(d.indices(Split::Valid), [5, 6]);
        let valid = format!("{}/binarized_mnist_valid.amat", dir.path());
        let from_file = Dataset::load(&valid).unwrap();
        assert_eq!((from_file.split, from_file.pixels), (d.split, d.pixels));

        let lone = TempDir::new("amat-lone");
        let p = lone.write("binarized_mnist_train.amat", amat_lines(12, "0").as_bytes());
        let d = Dataset::load(&p).unwrap();
        assert_eq!((d.rows, counts(&d)), (12, [8, 2, 2]));
    }

    #[test]
    fn amat_errors() {
        let text = amat_lines(3, "1") + "0 1 0.5 1\n";
        assert_err(
            parse_amat(text.as_bytes(), "binarized_mnist_valid.amat"),
            "binarized_mnist_valid.amat line 4 value 3: '0.5' is not 0 or 1",
        );
        assert_err(
            parse_amat(b"0 1 0 1\n0 1 1\n", "a.amat"),
            "a.amat line 2: expected 4 values (as on line 1), found 3",
        );
        assert_eq!(parse_amat(b"0 1 0\n", "a.amat").unwrap().dim, 3);
        assert_err(parse_amat(b"0 1 x 1\n", "a.amat"), "line 1 value 3: 'x' is not 0 or 1");
        assert_err(parse_amat(b" \n", "a.amat"), "a.amat: empty file");
        assert_err(
            parse_amat(b"0 1 0 1\n\n0 1 0 1\n", "a.amat"),
            "a.amat line 2: blank line before the end of the data",
        );

        let dir = TempDir::new("amat-err");
        dir.write("binarized_mnist_train.amat", b"0 1 0 1\n");
        dir.write("binarized_mnist_valid.amat", b"0 1 0 1 0 1 0 1 0\n");
        assert_err(Dataset::load(dir.path()), "missing binarized_mnist_test.amat");
        dir.write("binarized_mnist_test.amat", b"0 1 0 1\n");
        assert_err(Dataset::load(dir.path()), "binarized_mnist_valid.amat: 9 values per line, but");
    }

    // ---- parsers never panic ----

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        fn idx_prefix() -> impl Strategy<Value = Vec<u8>> {
            (prop::sample::select(vec![0x801u32, 0x803, 0x12345678]), prop::collection::vec(0u32..6, 0..4)).prop_map(
                |(m, dims)| {
                    dims.iter().fold(m.to_be_bytes().to_vec(), |mut b, d| {
                        b.extend(d.to_be_bytes());
                        b
                    })
                },
            )
        }

        proptest! {
            #[test]
            fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse_csv(&bytes, "f");
                let _ = parse_amat(&bytes, "f");
                let _ = parse_idx_images(&bytes, "f");
                let _ = parse_idx_labels(&bytes, "f");
                let _ = gunzip(&bytes, "f");
                let mut gz = vec![0x1f, 0x8b];
                gz.extend(&bytes);
                let _ = gunzip(&gz, "f");
            }

            #[test]
            fn csv_like_text(text in "[0-9,\n\r .e+-]{0,300}|([0-9]{1,3},){3}[0-9]\n{0,3}") {
                if let Ok(t) = parse_csv(text.as_bytes(), "f") {
                    prop_assert_eq!(t.pixels.len(), t.rows * t.dim);
                }
            }

            #[test]
            fn amat_like_text(text in "[01 \n\t.x]{0,300}") {
                if let Ok(t) = parse_amat(text.as_bytes(), "f") {
                    prop_assert_eq!(t.pixels.len(), t.rows * t.dim);
                    prop_assert!(t.pixels.iter().all(|&p| p == 0.0 || p == 1.0));
                }
            }

            #[test]
            fn idx_like_bytes(head in idx_prefix(), tail in prop::collection::vec(any::<u8>(), 0..200)) {
                let bytes = [head, tail].concat();
                if let Ok(x) = parse_idx_images(&bytes, "f") {
                    prop_assert_eq!(x.pixels.len(), x.count * x.rows * x.cols);
                }
                let _ = parse_idx_labels(&bytes, "f");
            }
        }
    }
}
