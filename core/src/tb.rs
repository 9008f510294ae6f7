//! TensorBoard event-file logger.
//!
//! wick writes TensorBoard event files itself, synchronously, instead of using
//! `tensorboard_rs::summary_writer::SummaryWriter`, whose 0.5.9 release panics on I/O
//! errors inside a background thread, names two writers opened in one directory in
//! the same second identically (the second overwrites the first), swaps width and
//! height of non-square images and has no text summaries. The pieces it does reuse:
//! `RecordWriter` (TFRecord framing with masked CRC32C), `summary::{scalar,
//! histogram_raw}` and the `tensorboard_proto` messages.
//!
//! Writes go through a `BufWriter`; [`TbLogger::flush`] (and drop) flushes and fsyncs.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use protobuf::{Message, RepeatedField};
use tensorboard_proto::event::{Event, SessionLog, SessionLog_SessionStatus};
use tensorboard_proto::summary::{Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Image, Summary_Value};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::TensorShapeProto;
use tensorboard_proto::types::DataType;
use tensorboard_rs::record_writer::RecordWriter;

use crate::error::{Error, Result};
use crate::image::{encode_png, io_msg};

/// Number of equal-width buckets in a histogram summary.
const HISTOGRAM_BUCKETS: usize = 30;

/// A TensorBoard event file being written.
pub struct TbLogger {
    /// None: a disabled logger (the non-zero ranks of a data-parallel run) that writes nothing.
    file: Option<BufWriter<File>>,
    path: PathBuf,
}

impl TbLogger {
    /// Checks/creates `dir` up front (a clear wick Error if it is not writable, e.g. `cannot write TensorBoard logs in 'runs/x': Permission denied`), creates a NEW event file named
    /// `events.out.tfevents.{unix_secs:010}.{hostname}.{pid}.{k}` with the smallest k>=0 whose file does not exist (create_new, so two loggers in one second never collide), and writes the `brain.Event:2` file_version event.
    pub fn create(dir: &Path) -> Result<TbLogger> {
        let dir_err = |msg: String| Error::new(format!("cannot write TensorBoard logs in '{}': {msg}", dir.display()));
        if dir.exists() && !dir.is_dir() {
            return Err(dir_err("it is not a directory".into()));
        }
        fs::create_dir_all(dir).map_err(|e| dir_err(io_msg(&e)))?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // TensorBoard reads a directory's event files in name order: make this one sort after
        // every file already there (a resumed run may start within the same second).
        let latest = latest_event_secs(dir);
        let secs = match latest {
            Some(l) if l >= secs => l + 1,
            _ => secs,
        };
        let host = hostname();
        let pid = std::process::id();
        let mut k = 0u32;
        let (file, path) = loop {
            let path = dir.join(format!("events.out.tfevents.{secs:010}.{host}.{pid}.{k}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && k < 100_000 => k += 1,
                Err(e) => return Err(dir_err(io_msg(&e))),
            }
        };
        let mut logger = TbLogger {
            file: Some(BufWriter::new(file)),
            path,
        };
        let mut ev = new_event(0);
        ev.set_file_version("brain.Event:2".to_string());
        logger.write_event(&ev)?;
        logger.flush()?;
        Ok(logger)
    }

    /// A logger that writes nothing: every call succeeds and does nothing (the ranks other
    /// than 0 of a data-parallel run, see dist.rs).
    pub fn disabled() -> TbLogger {
        TbLogger { file: None, path: PathBuf::new() }
    }

    /// [`TbLogger::create`] on rank 0 of the data-parallel world, [`TbLogger::disabled`] elsewhere.
    pub fn create_on_root(dir: &Path) -> Result<TbLogger> {
        if crate::dist::world().is_root() {
            TbLogger::create(dir)
        } else {
            Ok(TbLogger::disabled())
        }
    }

    /// For a resumed run: writes a SessionLog START event at `step` so TensorBoard purges events with step >= `step` that the interrupted run wrote after its last checkpoint (TensorBoard's EventAccumulator does this with purge_orphaned_data).
    pub fn resume_at(&mut self, step: u64) -> Result<()> {
        let mut log = SessionLog::new();
        log.set_status(SessionLog_SessionStatus::START);
        let mut ev = new_event(step);
        ev.set_session_log(log);
        self.write_event(&ev)?;
        self.flush()
    }

    /// A scalar (stored as `simple_value`, an f32).
    pub fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<()> {
        self.write_summary(step, tensorboard_rs::summary::scalar(tag, value as f32))
    }

    /// A histogram of `values`: min/max/num/sum/sum_squares and 30 equal-width
    /// buckets between min and max. Non-finite values are skipped; if none is left,
    /// nothing is written.
    pub fn histogram(&mut self, tag: &str, step: u64, values: &[f32]) -> Result<()> {
        let Some(h) = Histogram::of(values) else { return Ok(()) };
        let summary = tensorboard_rs::summary::histogram_raw(
            tag,
            h.min,
            h.max,
            h.num,
            h.sum,
            h.sum_squares,
            &h.limits,
            &h.counts,
        );
        self.write_summary(step, summary)
    }

    /// Image from row-major pixels, `channels` 1 (grey) or 3 (interleaved RGB), any height x width (non-square must come out the right way round): PNG-encoded into a Summary_Image with the correct height/width/colorspace.
    pub fn image(
        &mut self,
        tag: &str,
        step: u64,
        pixels: &[u8],
        height: usize,
        width: usize,
        channels: usize,
    ) -> Result<()> {
        let png = encode_png(pixels, height, width, channels).map_err(|e| e.context(format!("image '{tag}'")))?;
        let mut img = Summary_Image::new();
        // encode_png checked that both fit in u32; TensorBoard wants i32.
        let (h, w) = (i32::try_from(height), i32::try_from(width));
        let (Ok(h), Ok(w)) = (h, w) else {
            crate::bail!("image '{tag}' of {height}x{width} pixels is too large")
        };
        img.set_height(h);
        img.set_width(w);
        img.set_colorspace(channels as i32);
        img.set_encoded_image_string(png);
        let mut value = Summary_Value::new();
        value.set_tag(tag.to_string());
        value.set_image(img);
        self.write_summary(step, summary_of(value))
    }

    /// Text summary (TensorBoard's text plugin: a DT_STRING tensor with plugin_name "text"), e.g. the run's config as Markdown.
    pub fn text(&mut self, tag: &str, step: u64, text: &str) -> Result<()> {
        let mut tensor = TensorProto::new();
        tensor.set_dtype(DataType::DT_STRING);
        tensor.set_tensor_shape(TensorShapeProto::new()); // a scalar
        tensor.set_string_val(RepeatedField::from_vec(vec![text.as_bytes().to_vec()]));
        let mut plugin = SummaryMetadata_PluginData::new();
        plugin.set_plugin_name("text".to_string());
        // content: a serialized TextPluginData { version: 0 }, which is empty.
        let mut meta = SummaryMetadata::new();
        meta.set_plugin_data(plugin);
        let mut value = Summary_Value::new();
        value.set_tag(tag.to_string());
        value.set_metadata(meta);
        value.set_tensor(tensor);
        self.write_summary(step, summary_of(value))
    }

    /// Flushes buffered events and fsyncs the file.
    pub fn flush(&mut self) -> Result<()> {
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        let r = file.flush().and_then(|_| file.get_ref().sync_all());
        r.map_err(|e| self.io_err(e))
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_summary(&mut self, step: u64, summary: Summary) -> Result<()> {
        let mut ev = new_event(step);
        ev.set_summary(summary);
        self.write_event(&ev)
    }

    fn write_event(&mut self, ev: &Event) -> Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        let data = ev.write_to_bytes().map_err(|e| {
            Error::new(format!(
                "cannot encode TensorBoard event for '{}': {e}",
                self.path.display()
            ))
        })?;
        // Frame the record in memory (length, masked CRCs), then write it in one go.
        let mut framed = Vec::with_capacity(data.len() + 16);
        RecordWriter::new(&mut framed)
            .write(&data)
            .map_err(|e| self.io_err(e))?;
        let r = self.file.as_mut().map_or(Ok(()), |f| f.write_all(&framed));
        r.map_err(|e| self.io_err(e))
    }

    fn io_err(&self, e: std::io::Error) -> Error {
        Error::new(format!(
            "cannot write TensorBoard event file '{}': {}",
            self.path.display(),
            io_msg(&e)
        ))
    }
}

impl Drop for TbLogger {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn new_event(step: u64) -> Event {
    let mut ev = Event::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    ev.set_wall_time(now);
    ev.set_step(i64::try_from(step).unwrap_or(i64::MAX));
    ev
}

fn summary_of(value: Summary_Value) -> Summary {
    let mut s = Summary::new();
    s.set_value(RepeatedField::from_vec(vec![value]));
    s
}

/// The largest `unix_secs` in the names of the event files in `dir`.
fn latest_event_secs(dir: &Path) -> Option<u64> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("events.out.tfevents.")?.split('.').next()?.parse::<u64>().ok()
        })
        .max()
}

/// The event files of `dir` in the order TensorBoard reads them (by name).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = fs::read_dir(dir).map_err(|e| Error::new(format!("reading '{}': {}", dir.display(), io_msg(&e))))?;
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents.")))
        .collect();
    v.sort();
    Ok(v)
}

/// The events of one file. A truncated or corrupt last record (a process killed mid-write)
/// ends the file, as in TensorBoard; CRCs are checked.
pub fn read_event_file(path: &Path) -> Result<Vec<Event>> {
    use tensorboard_rs::masked_crc32c::masked_crc32c;
    let bytes = fs::read(path).map_err(|e| Error::new(format!("reading '{}': {}", path.display(), io_msg(&e))))?;
    let mut events = Vec::new();
    let mut at = 0usize;
    while at + 12 <= bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        if masked_crc32c(len_bytes) != len_crc || at + 16 + len > bytes.len() {
            break;
        }
        let data = &bytes[at + 12..at + 12 + len];
        let data_crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
        if masked_crc32c(data) != data_crc {
            break;
        }
        match Event::parse_from_bytes(data) {
            Ok(ev) => events.push(ev),
            Err(_) => break,
        }
        at += 16 + len;
    }
    Ok(events)
}

/// The scalar curves of a run directory as TensorBoard shows them: files in name order, a
/// SessionLog START at step s drops every point with step >= s, and a point whose step goes
/// back drops that tag's points from that step on (TensorBoard's `purge_orphaned_data`).
pub fn read_scalars(dir: &Path) -> Result<std::collections::BTreeMap<String, Vec<(u64, f32)>>> {
    let mut out: std::collections::BTreeMap<String, Vec<(u64, f32)>> = Default::default();
    for f in event_files(dir)? {
        for ev in read_event_file(&f)? {
            let step = ev.get_step().max(0) as u64;
            if ev.has_session_log() && ev.get_session_log().get_status() == SessionLog_SessionStatus::START {
                for pts in out.values_mut() {
                    pts.retain(|p| p.0 < step);
                }
            }
            if ev.has_summary() {
                for v in ev.get_summary().get_value() {
                    if !v.has_simple_value() {
                        continue;
                    }
                    let pts = out.entry(v.get_tag().to_string()).or_default();
                    if pts.last().is_some_and(|p| p.0 > step) {
                        pts.retain(|p| p.0 < step);
                    }
                    pts.push((step, v.get_simple_value()));
                }
            }
        }
    }
    Ok(out)
}

/// This machine's name, safe for a file name (`localhost` if unknown).
fn hostname() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| fs::read_to_string("/etc/hostname").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// Histogram statistics in TensorBoard's layout: `counts[i]` counts the values in
/// `(limits[i-1], limits[i]]` (the first bucket also holds `min`).
#[derive(Debug)]
struct Histogram {
    min: f64,
    max: f64,
    num: f64,
    sum: f64,
    sum_squares: f64,
    limits: Vec<f64>,
    counts: Vec<f64>,
}

impl Histogram {
    fn of(values: &[f32]) -> Option<Histogram> {
        let finite = || values.iter().filter(|v| v.is_finite()).map(|&v| v as f64);
        let (mut min, mut max, mut num, mut sum, mut sum_squares) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0.0, 0.0);
        for v in finite() {
            min = min.min(v);
            max = max.max(v);
            num += 1.0;
            sum += v;
            sum_squares += v * v;
        }
        if num == 0.0 {
            return None;
        }
        let (limits, counts) = if min == max {
            (vec![max], vec![num])
        } else {
            let width = (max - min) / HISTOGRAM_BUCKETS as f64;
            let mut limits: Vec<f64> = (1..=HISTOGRAM_BUCKETS).map(|k| min + k as f64 * width).collect();
            limits[HISTOGRAM_BUCKETS - 1] = max;
            let mut counts = vec![0.0; HISTOGRAM_BUCKETS];
            for v in finite() {
                let i = (((v - min) / width).ceil() as usize)
                    .saturating_sub(1)
                    .min(HISTOGRAM_BUCKETS - 1);
                counts[i] += 1.0;
            }
            (limits, counts)
        };
        Some(Histogram {
            min,
            max,
            num,
            sum,
            sum_squares,
            limits,
            counts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;
    use std::collections::BTreeMap;
    use tensorboard_proto::summary::Summary_Value_oneof_value as V;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
            let p = std::env::temp_dir().join(format!("wick-tb-{name}-{}-{nanos}", std::process::id()));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Bitwise CRC-32C (Castagnoli), independent of tensorboard-rs's table.
    fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn masked(data: &[u8]) -> u32 {
        let c = crc32c(data);
        c.rotate_right(15).wrapping_add(0xa282_ead8)
    }

    /// Reads every TFRecord frame of an event file, checking both CRCs.
    fn read_events(path: &Path) -> Vec<Event> {
        let bytes = fs::read(path).unwrap();
        let mut events = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            assert!(at + 12 <= bytes.len(), "truncated header");
            let len_bytes = &bytes[at..at + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(len_crc, masked(len_bytes), "length CRC");
            let data = &bytes[at + 12..at + 12 + len];
            let data_crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(data_crc, masked(data), "data CRC");
            events.push(Event::parse_from_bytes(data).unwrap());
            at += 16 + len;
        }
        events
    }

    fn event_files(dir: &Path) -> Vec<PathBuf> {
        super::event_files(dir).unwrap()
    }

    fn decode_png(bytes: &[u8]) -> (Vec<u8>, u32, u32, png::ColorType) {
        let mut reader = png::Decoder::new(bytes).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (buf, info.width, info.height, info.color_type)
    }

    #[test]
    fn crc_matches_tensorboard_rs() {
        // The published CRC-32C check value, and agreement with the writer's table.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        for data in [&b""[..], b"a", b"hello tensorboard", &[0u8; 100]] {
            assert_eq!(masked(data), tensorboard_rs::masked_crc32c::masked_crc32c(data));
        }
    }

    #[test]
    fn written_file_parses_back() {
        let dir = TempDir::new("parse");
        let path = {
            let mut tb = TbLogger::create(&dir.0).unwrap();
            tb.scalar("loss", 0, 1.5).unwrap();
            tb.scalar("loss", 1, 0.25).unwrap();
            tb.scalar("lr", 1, 1e-3).unwrap();
            tb.histogram("w", 2, &[1.0, 2.0, 3.0, f32::NAN, 4.0, f32::INFINITY])
                .unwrap();
            tb.histogram("empty", 2, &[f32::NAN]).unwrap(); // nothing written
            tb.text("config", 0, "# hi\n`x = 1`").unwrap();
            tb.resume_at(7).unwrap();
            tb.path().to_path_buf()
        }; // dropped: flushed
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("events.out.tfevents.") && name.ends_with(&format!(".{}.0", std::process::id())),
            "{name}"
        );
        assert_eq!(event_files(&dir.0), vec![path.clone()]);

        let events = read_events(&path);
        assert_eq!(events.len(), 7);
        assert_eq!(events[0].get_file_version(), "brain.Event:2");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        for ev in &events {
            assert!(ev.get_wall_time() > now - 60.0 && ev.get_wall_time() <= now + 1.0);
        }
        let mut scalars = Vec::new();
        for ev in &events[1..4] {
            let v = &ev.get_summary().get_value()[0];
            scalars.push((v.get_tag().to_string(), ev.get_step(), v.get_simple_value()));
        }
        assert_eq!(
            scalars,
            vec![
                ("loss".into(), 0, 1.5),
                ("loss".into(), 1, 0.25),
                ("lr".into(), 1, 1e-3f32)
            ]
        );

        let hv = &events[4].get_summary().get_value()[0];
        assert_eq!((hv.get_tag(), events[4].get_step()), ("w", 2));
        let h = hv.get_histo();
        assert_eq!(
            (h.get_min(), h.get_max(), h.get_num(), h.get_sum(), h.get_sum_squares()),
            (1.0, 4.0, 4.0, 10.0, 30.0)
        );
        assert_eq!(h.get_bucket().len(), HISTOGRAM_BUCKETS);
        assert_eq!(h.get_bucket_limit().len(), HISTOGRAM_BUCKETS);
        assert_eq!(h.get_bucket().iter().sum::<f64>(), 4.0);
        assert_eq!(h.get_bucket()[0], 1.0); // min is in the first bucket
        assert_eq!(h.get_bucket()[HISTOGRAM_BUCKETS - 1], 1.0); // max in the last
        assert_eq!(*h.get_bucket_limit().last().unwrap(), 4.0);

        let tv = &events[5].get_summary().get_value()[0];
        assert_eq!(tv.get_tag(), "config");
        assert_eq!(tv.get_metadata().get_plugin_data().get_plugin_name(), "text");
        let t = tv.get_tensor();
        assert_eq!(t.get_dtype(), DataType::DT_STRING);
        assert_eq!(t.get_tensor_shape().get_dim().len(), 0);
        assert_eq!(t.get_string_val(), &[b"# hi\n`x = 1`".to_vec()]);

        assert_eq!(events[6].get_step(), 7);
        assert_eq!(
            events[6].get_session_log().get_status(),
            SessionLog_SessionStatus::START
        );
    }

    #[test]
    fn histogram_buckets() {
        let h = Histogram::of(&[5.0, 5.0, f32::NEG_INFINITY]).unwrap();
        assert_eq!(
            (h.min, h.max, h.num, h.limits.clone(), h.counts.clone()),
            (5.0, 5.0, 2.0, vec![5.0], vec![2.0])
        );
        assert!(Histogram::of(&[]).is_none());
        let vals: Vec<f32> = (0..=300).map(|i| i as f32 / 10.0).collect(); // 0.0 ..= 30.0
        let h = Histogram::of(&vals).unwrap();
        assert_eq!(h.counts.iter().sum::<f64>(), 301.0);
        // Bucket (k, k+1]: 10 values each, plus 0.0 in the first.
        assert_eq!(h.counts[0], 11.0);
        assert!(h.counts[1..].iter().all(|&c| c == 10.0), "{:?}", h.counts);
        assert!(h.limits.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn two_loggers_get_distinct_files() {
        let dir = TempDir::new("distinct");
        let mut a = TbLogger::create(&dir.0).unwrap();
        let mut b = TbLogger::create(&dir.0).unwrap();
        let c = TbLogger::create(&dir.0).unwrap();
        assert_ne!(a.path(), b.path());
        assert_ne!(b.path(), c.path());
        assert_ne!(a.path(), c.path());
        a.scalar("x", 0, 1.0).unwrap();
        b.scalar("x", 0, 2.0).unwrap();
        let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
        drop((a, b, c));
        assert_eq!(event_files(&dir.0).len(), 3);
        assert_eq!(read_events(&pa)[1].get_summary().get_value()[0].get_simple_value(), 1.0);
        assert_eq!(read_events(&pb)[1].get_summary().get_value()[0].get_simple_value(), 2.0);
    }

    #[test]
    fn unwritable_dir_is_an_error() {
        let dir = TempDir::new("unwritable");
        let file = dir.0.join("plain");
        fs::write(&file, b"x").unwrap();
        let e = TbLogger::create(&file.join("runs").join("x"))
            .err()
            .expect("must fail")
            .to_string();
        assert!(
            e.starts_with("cannot write TensorBoard logs in '") && e.contains("plain/runs/x"),
            "{e}"
        );
        assert!(!e.contains('\n') && !e.contains("os error"), "{e}");
        let e = TbLogger::create(&file).err().expect("must fail").to_string();
        assert!(e.ends_with("': it is not a directory"), "{e}");
    }

    #[test]
    fn non_square_images_keep_their_shape() {
        let dir = TempDir::new("images");
        let grey: Vec<u8> = (0..15).map(|i| i * 17).collect(); // 3 rows x 5 cols
        let rgb: Vec<u8> = (0..24).map(|i| i * 10).collect(); // 2 rows x 4 cols x 3
        let path = {
            let mut tb = TbLogger::create(&dir.0).unwrap();
            tb.image("grey", 3, &grey, 3, 5, 1).unwrap();
            tb.image("rgb", 4, &rgb, 2, 4, 3).unwrap();
            assert!(tb.image("bad", 4, &rgb, 2, 4, 2).is_err());
            assert!(tb.image("bad", 4, &rgb, 3, 4, 3).is_err());
            tb.path().to_path_buf()
        };
        let events = read_events(&path);
        assert_eq!(events.len(), 3);
        let expect = [
            ("grey", 3, 5, 3, 1, &grey, png::ColorType::Grayscale),
            ("rgb", 4, 4, 2, 3, &rgb, png::ColorType::Rgb),
        ];
        for (ev, (tag, step, w, h, cs, px, ct)) in events[1..].iter().zip(expect) {
            let v = &ev.get_summary().get_value()[0];
            assert_eq!((v.get_tag(), ev.get_step()), (tag, step));
            let Some(V::image(img)) = &v.value else {
                panic!("not an image")
            };
            assert_eq!((img.get_width(), img.get_height(), img.get_colorspace()), (w, h, cs));
            let (dpx, dw, dh, dct) = decode_png(img.get_encoded_image_string());
            assert_eq!((dw as i32, dh as i32, dct), (w, h, ct));
            assert_eq!(&dpx, px);
        }
    }

    // ---- Python oracle: TensorBoard's own EventAccumulator reads what we wrote. ----

    /// The python named by `WICK_PYTHON` (see [`crate::oracle`]), or None (skip).
    fn oracle_python() -> Option<String> {
        crate::oracle::python("the `tensorboard` package").map(|p| p.display().to_string())
    }

    /// Runs scripts/tb_read.py on `dir` and returns its JSON output, parsed.
    fn oracle(python: &str, dir: &Path) -> Json {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tb_read.py");
        assert!(script.is_file(), "missing oracle script {}", script.display());
        let out = std::process::Command::new(python)
            .arg(&script)
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{python} {} failed: {}\n{stdout}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("oracle ({python}): {stdout}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("oracle output is not JSON: {e}"))
    }

    #[test]
    fn python_tensorboard_reads_our_files() {
        let Some(python) = oracle_python() else { return };
        let dir = TempDir::new("oracle");
        let grey: Vec<u8> = (0..15).map(|i| i * 17).collect();
        let mut expect_scalars: BTreeMap<String, Vec<(u64, f32)>> = BTreeMap::new();
        {
            let mut tb = TbLogger::create(&dir.0).unwrap();
            tb.text(
                "config",
                0,
                "# config\n\n| key | value |\n|---|---|\n| lr | 0.001 |\nünïcödé ✓",
            )
            .unwrap();
            for step in 0..20u64 {
                for (tag, v) in [
                    ("train/loss", 1.0 / (step as f64 + 1.0)),
                    ("train/acc", step as f64 * 0.05 - 0.3),
                    ("lr", 1e-3 * 0.9f64.powi(step as i32)),
                ] {
                    if tag == "lr" && step % 5 != 0 {
                        continue;
                    }
                    tb.scalar(tag, step, v).unwrap();
                    expect_scalars
                        .entry(tag.to_string())
                        .or_default()
                        .push((step, v as f32));
                }
            }
            tb.histogram("weights", 10, &[-1.0, 0.0, 0.5, 2.0, f32::NAN]).unwrap();
            tb.histogram("weights", 20, &[3.0; 7]).unwrap();
            tb.image("samples", 19, &grey, 3, 5, 1).unwrap();
            tb.image("rgb", 19, &[200; 2 * 4 * 3], 2, 4, 3).unwrap();
        }
        let out = oracle(&python, &dir.0);

        let scalars = out["scalars"].as_object().expect("scalars");
        assert_eq!(
            scalars.keys().cloned().collect::<Vec<_>>(),
            expect_scalars.keys().cloned().collect::<Vec<_>>()
        );
        for (tag, expect) in &expect_scalars {
            let got: Vec<(u64, f32)> = rows(&scalars[tag]).iter().map(|r| (r[0] as u64, r[1] as f32)).collect();
            assert_eq!(&got, expect, "{tag}");
        }

        // [step, num, min, max]
        assert_eq!(
            rows(&out["histograms"]["weights"]),
            vec![vec![10.0, 4.0, -1.0, 2.0], vec![20.0, 7.0, 3.0, 3.0]]
        );
        assert_eq!(out["histograms"].as_object().unwrap().len(), 1);

        // [step, width, height]
        assert_eq!(out["images"].as_object().unwrap().len(), 2);
        assert_eq!(rows(&out["images"]["samples"]), vec![vec![19.0, 5.0, 3.0]]);
        assert_eq!(rows(&out["images"]["rgb"]), vec![vec![19.0, 4.0, 2.0]]);

        assert_eq!(out["texts"].as_object().unwrap().len(), 1);
        assert_eq!(
            out["texts"]["config"],
            serde_json::json!([[0, "# config\n\n| key | value |\n|---|---|\n| lr | 0.001 |\nünïcödé ✓"]])
        );
    }

    /// `[[number, ...], ...]` as f64 rows.
    fn rows(v: &Json) -> Vec<Vec<f64>> {
        v.as_array()
            .unwrap_or_else(|| panic!("not an array: {v}"))
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn python_tensorboard_purges_after_resume() {
        let Some(python) = oracle_python() else { return };
        let dir = TempDir::new("resume");
        {
            let mut tb = TbLogger::create(&dir.0).unwrap();
            for step in 0..10u64 {
                tb.scalar("a", step, step as f64).unwrap();
            }
        }
        {
            let mut tb = TbLogger::create(&dir.0).unwrap();
            tb.resume_at(6).unwrap();
            for step in 6..10u64 {
                tb.scalar("a", step, 100.0 + step as f64).unwrap();
            }
        }
        assert_eq!(event_files(&dir.0).len(), 2);
        let out = oracle(&python, &dir.0);
        let got = rows(&out["scalars"]["a"]);
        let expect: Vec<Vec<f64>> = (0..10)
            .map(|s| vec![s as f64, if s < 6 { s as f64 } else { 100.0 + s as f64 }])
            .collect();
        assert_eq!(got, expect);
    }
}
