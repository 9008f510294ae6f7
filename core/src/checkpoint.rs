//! Checkpoints as safetensors files, written atomically.
//!
//! A wick checkpoint is one `.safetensors` file holding
//! - the model parameters under their model's names (see docs/checkpoints.md),
//! - optimizer state under `optim.*` (moments, momentum buffers),
//! - every random stream of the run as a `U64[4]` tensor `rng.<stream>` (xoshiro256++ state),
//! - in the header's `__metadata__`, one key `wick` whose value is a JSON object with the
//!   step/epoch counters, the resolved config and anything else the trainer needs to resume.
//!   (One key, because safetensors serialises its metadata map in hash order: with one key
//!   the bytes are the same on every run.)
//!
//! Python reads it with `safetensors.numpy.load_file` and
//! `json.loads(safe_open(path, "np").metadata()["wick"])`.
//!
//! Files are written to a temporary file in the same directory, fsynced and renamed over the
//! target, so a crash at any point leaves either the old or the new checkpoint, never a torn one.

use crate::error::{Context, Error, Result};
use crate::rng::Rng;
use candle_core::{Device, Tensor};
use safetensors::{Dtype, View};
use serde::{de::DeserializeOwned, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

/// A tensor held on the host as little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The little-endian bytes of `v`: on a little-endian host the values' own bytes, one copy (the
/// byte-at-a-time `flat_map` took 10 ms for an order-agnostic NADE's 17 MB checkpoint); `to_le`
/// on a big-endian one. For f32, f64 and u64 only: plain numbers, no padding.
fn le_bytes<T: Copy, const N: usize>(v: &[T], to_le: fn(T) -> [u8; N]) -> Vec<u8> {
    #[cfg(target_endian = "little")]
    {
        let _ = to_le;
        // SAFETY: T is f32, f64 or u64 (the callers): every initialised value is readable as
        // its size_of::<T>() bytes, and the slice as size_of_val(v) of them.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }.to_vec()
    }
    #[cfg(not(target_endian = "little"))]
    {
        v.iter().flat_map(|&x| to_le(x)).collect()
    }
}

/// Tensors plus JSON metadata; see the module docs for the layout.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    tensors: BTreeMap<String, HostTensor>,
    meta: BTreeMap<String, serde_json::Value>,
}

impl Checkpoint {
    pub fn new() -> Self {
        Self::default()
    }

    /// Store a candle tensor (any device) as f32; a `u8` tensor (0/1 masks) stays `u8`, a
    /// quarter of the bytes.
    pub fn put_tensor(&mut self, name: &str, t: &Tensor) -> Result<()> {
        let shape = t.dims().to_vec();
        if t.dtype() == candle_core::DType::U8 {
            let data = t.flatten_all()?.to_vec1::<u8>()?;
            self.tensors.insert(name.to_string(), HostTensor { dtype: Dtype::U8, shape, data });
            return Ok(());
        }
        let v = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        self.put_f32(name, &shape, &v);
        Ok(())
    }

    pub fn put_f32(&mut self, name: &str, shape: &[usize], v: &[f32]) {
        assert_eq!(shape.iter().product::<usize>(), v.len(), "put_f32 {name}: shape and length differ");
        let data = le_bytes(v, f32::to_le_bytes);
        self.tensors.insert(name.to_string(), HostTensor { dtype: Dtype::F32, shape: shape.to_vec(), data });
    }

    /// Store f64 values exactly (tabular value tables: a resumed run continues to the bit).
    pub fn put_f64(&mut self, name: &str, shape: &[usize], v: &[f64]) {
        assert_eq!(shape.iter().product::<usize>(), v.len(), "put_f64 {name}: shape and length differ");
        let data = le_bytes(v, f64::to_le_bytes);
        self.tensors.insert(name.to_string(), HostTensor { dtype: Dtype::F64, shape: shape.to_vec(), data });
    }

    pub fn put_u64(&mut self, name: &str, shape: &[usize], v: &[u64]) {
        assert_eq!(shape.iter().product::<usize>(), v.len(), "put_u64 {name}: shape and length differ");
        let data = le_bytes(v, u64::to_le_bytes);
        self.tensors.insert(name.to_string(), HostTensor { dtype: Dtype::U64, shape: shape.to_vec(), data });
    }

    /// Store a random stream's state as `rng.<name>`.
    pub fn put_rng(&mut self, name: &str, r: &Rng) {
        self.put_u64(&format!("rng.{name}"), &[4], &r.state());
    }

    /// Set a metadata entry (serialised as JSON inside the `wick` header key).
    pub fn set_meta<T: Serialize>(&mut self, key: &str, value: &T) {
        let v = serde_json::to_value(value).expect("metadata serialises to JSON");
        self.meta.insert(key.to_string(), v);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn get(&self, name: &str) -> Result<&HostTensor> {
        self.tensors.get(name).ok_or_else(|| Error::new(format!("checkpoint has no tensor '{name}'")))
    }

    /// An f32 tensor's values, checking the shape.
    pub fn f32_values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.get(name)?;
        if t.dtype != Dtype::F32 {
            return Err(Error::new(format!("checkpoint tensor '{name}' has dtype {:?}, expected F32", t.dtype)));
        }
        if t.shape != shape {
            return Err(Error::new(format!(
                "checkpoint tensor '{name}' has shape {:?}, expected {:?} (was it saved by another model or size?)",
                t.shape, shape
            )));
        }
        Ok(t.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
    }

    /// An f32 tensor as a candle tensor on `device`, checking the shape.
    pub fn tensor(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
        let v = self.f32_values(name, shape)?;
        Ok(Tensor::from_vec(v, shape, device)?)
    }

    /// An f64 tensor's values, checking dtype and shape.
    pub fn f64_values(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        let t = self.get(name)?;
        if t.dtype != Dtype::F64 || t.shape != shape {
            return Err(Error::new(format!(
                "checkpoint tensor '{name}' is {:?}{:?}, expected F64{:?}",
                t.dtype, t.shape, shape
            )));
        }
        Ok(t.data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect())
    }

    pub fn u64_values(&self, name: &str, shape: &[usize]) -> Result<Vec<u64>> {
        let t = self.get(name)?;
        if t.dtype != Dtype::U64 || t.shape != shape {
            return Err(Error::new(format!(
                "checkpoint tensor '{name}' is {:?}{:?}, expected U64{:?}",
                t.dtype, t.shape, shape
            )));
        }
        Ok(t.data.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).collect())
    }

    /// The random stream stored by [`Checkpoint::put_rng`].
    pub fn rng(&self, name: &str) -> Result<Rng> {
        let v = self.u64_values(&format!("rng.{name}"), &[4])?;
        Ok(Rng::from_state([v[0], v[1], v[2], v[3]]))
    }

    /// A metadata entry.
    pub fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let v = self.meta.get(key).ok_or_else(|| Error::new(format!("checkpoint metadata has no '{key}'")))?;
        serde_json::from_value(v.clone()).map_err(|e| Error::new(format!("checkpoint metadata '{key}': {e}")))
    }

    /// The bytes of the safetensors file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let meta_json = serde_json::to_string(&self.meta).map_err(|e| Error::new(e.to_string()))?;
        let mut header = std::collections::HashMap::new();
        header.insert("wick".to_string(), meta_json);
        safetensors::serialize(self.tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(header))
            .map_err(|e| Error::new(format!("serialising checkpoint: {e}")))
    }

    /// Parse safetensors bytes; `what` names the source in errors.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Checkpoint> {
        let bad = |e: String| Error::new(format!("{what}: corrupt or not a safetensors checkpoint ({e})"));
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = match header.metadata().as_ref().and_then(|m| m.get("wick")) {
            Some(s) => serde_json::from_str(s).map_err(|e| bad(format!("metadata: {e}")))?,
            None => return Err(bad("no 'wick' metadata: not written by wick".into())),
        };
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            tensors.insert(
                name,
                HostTensor { dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data().to_vec() },
            );
        }
        Ok(Checkpoint { tensors, meta })
    }

    /// Write atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Read a checkpoint; a missing or corrupt file is an error naming it.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::new(format!("checkpoint '{}' not found", path.display())),
            _ => Error::new(format!("reading checkpoint '{}': {e}", path.display())),
        })?;
        Checkpoint::from_bytes(&bytes, &format!("checkpoint '{}'", path.display()))
    }
}

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync the
/// directory. Errors read `writing '<path>': <why>`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_io(path, bytes).with_context(|| format!("writing '{}'", path.display()))
}

/// [`write_atomic`] with the bare I/O error, for callers that word their own message.
///
/// The temp file `.<name>.tmp.<pid>.<n>` is created fresh (`create_new`, a per-process counter),
/// so concurrent writers never share one; it is removed on failure.
pub fn write_atomic_io(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (tmp, mut file) = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{}.tmp.{}.{n}", name.to_string_lossy(), std::process::id()));
        match fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let res = (|| -> std::io::Result<()> {
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        crate::fault::point("checkpoint-write");
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable (best effort: not supported everywhere).
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("wick-ck-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Resume state (loss sums, returns) travels as JSON metadata: every f64 must parse back to
    /// the same bits (serde_json's `float_roundtrip`; its default parser can miss the last bit).
    #[test]
    fn f64_metadata_round_trips_to_the_bit() {
        let mut rng = crate::rng::Rng::stream(5, "meta-f64");
        let mut vals: Vec<f64> = (0..20_000)
            .map(|_| f64::from_bits((rng.below(1 << 32) << 32) | rng.below(1 << 32)))
            .filter(|v| v.is_finite())
            .collect();
        vals.extend((0..20_000).map(|i| rng.uniform() * 10f64.powi(i % 40 - 20)));
        let mut ck = Checkpoint::new();
        ck.set_meta("vals", &vals);
        let back: Vec<f64> = Checkpoint::from_bytes(&ck.to_bytes().unwrap(), "test").unwrap().meta("vals").unwrap();
        for (a, b) in vals.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a:e} came back as {b:e}");
        }
    }

    #[test]
    fn round_trip_is_exact_and_bytes_are_deterministic() {
        let mut ck = Checkpoint::new();
        ck.put_f32("w", &[2, 3], &[1., 2., 3., 4., 5., 6.]);
        ck.put_rng("data", &Rng::stream(3, "data"));
        ck.set_meta("epoch", &7u64);
        ck.set_meta("config", &serde_json::json!({"lr": 0.001, "batch": 100}));
        let d = tmpdir("rt");
        let p = d.join("c.safetensors");
        ck.save(&p).unwrap();
        let back = Checkpoint::load(&p).unwrap();
        assert_eq!(back, ck);
        assert_eq!(back.f32_values("w", &[2, 3]).unwrap(), vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(back.rng("data").unwrap(), Rng::stream(3, "data"));
        assert_eq!(back.meta::<u64>("epoch").unwrap(), 7);
        assert_eq!(ck.to_bytes().unwrap(), back.to_bytes().unwrap());
        let e = back.f32_values("w", &[3, 2]).unwrap_err().to_string();
        assert!(e.contains("'w' has shape [2, 3], expected [3, 2]"), "{e}");
        assert!(back.f32_values("nope", &[1]).unwrap_err().to_string().contains("no tensor 'nope'"));
    }

    #[test]
    fn corrupt_and_missing_files_are_errors() {
        let d = tmpdir("bad");
        let e = Checkpoint::load(&d.join("missing.safetensors")).unwrap_err().to_string();
        assert!(e.contains("not found"), "{e}");
        let mut ck = Checkpoint::new();
        ck.put_f32("w", &[4], &[1.; 4]);
        ck.set_meta("x", &1);
        let bytes = ck.to_bytes().unwrap();
        for cut in [0, 5, 9, bytes.len() / 2, bytes.len() - 1] {
            fs::write(d.join("t.safetensors"), &bytes[..cut]).unwrap();
            let e = Checkpoint::load(&d.join("t.safetensors")).unwrap_err().to_string();
            assert!(e.contains("corrupt"), "cut {cut}: {e}");
        }
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tmpdir("atomic");
        let p = d.join("f.bin");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        assert!(write_atomic(&d.join("no/such/dir/f"), b"x").is_err());
    }
}
