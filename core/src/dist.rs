//! Data-parallel training over MPI: `mpirun -np N wick train …`, bit-identical to one process.
//!
//! N processes (ranks) each hold the whole model. Every global batch of B rows is cut into M
//! contiguous *micro-batches* (M = `--micro-batches`, a multiple of N; by default M = N), rank r
//! computes micro-batches r·M/N … (r+1)·M/N − 1, and the gradients are combined in a fixed order:
//!
//! ```text
//! g = Σ_{s=0}^{M−1} (n_s / b) · g_s      summed left to right in f64, s = micro-batch index
//! ℓ = Σ_{s=0}^{M−1} (n_s / b) · ℓ_s      (n_s rows of the b in this batch; g_s, ℓ_s its mean gradient and loss)
//! ```
//!
//! Each rank flattens its gradients in **sorted parameter-name order** (never a hash map's), and
//! the sum is sharded like a reduce-scatter: one all-to-all hands rank r slice r (of N) of every
//! micro-batch's gradient, rank r sums its slice in micro-batch order, and an all-gather returns
//! the summed slices to every rank (a ring all-reduce's bytes). MPI's own `MPI_Allreduce` is not
//! used for this: its summation order is the implementation's and changes with N (OpenMPI 4.1
//! sums 4 ranks as (r0+r1)+(r2+r3)). So the result depends on (B, M) only: N ranks give the
//! same bits as one process that runs the M micro-batches one after another (`--micro-batches
//! M`, which is also plain gradient accumulation for a batch that does not fit in memory).
//!
//! Ranks that share one node do the same through an MPI-3 shared-memory window instead of
//! messages, and split the optimizer's update among themselves (module `node`; the same bits).
//!
//! With M = 1 (one process, no accumulation) the step is the plain one, untouched.
//!
//! Opt-in [`Allreduce::Ring`] (`--allreduce ring`) uses `MPI_Allreduce` instead: each rank's
//! weighted sum of its micro-batches, rounded to f32, summed in MPI's order: the same bytes in
//! MPI's pipelined algorithms, and no bit-identity across N.
//!
//! The launcher is found from the environment (`OMPI_COMM_WORLD_SIZE` for OpenMPI's `mpirun`,
//! `PMI_SIZE` for MPICH/Hydra and Slurm's PMI-2, `SLURM_STEP_NUM_TASKS` under `srun`). A build
//! without the `mpi` feature started with more than one rank stops with one line naming the
//! feature. Rank 0 alone writes files; the others only compute (see docs/distributed.md).

use crate::error::{Error, Result};
use crate::params::Params;
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use std::sync::OnceLock;

/// This process's place among the ranks of a data-parallel run.
#[derive(Debug)]
pub struct World {
    rank: usize,
    size: usize,
}

static WORLD: OnceLock<World> = OnceLock::new();

crate::choice! {
    /// How the ranks' gradients are combined (`--allreduce`).
    pub enum Allreduce("all-reduce") {
        /// sum every micro-batch's gradient in micro-batch order (a reduce-scatter by all-to-all, then an all-gather): N ranks give the bits of one process with --micro-batches N (default)
        Ordered = "ordered",
        /// MPI_Allreduce (sum) in MPI's own order: the same bytes in MPI's pipelined algorithms, but results differ in the last bits across N (not bit-identical)
        Ring = "ring",
    }
}

#[allow(clippy::derivable_impls)] // the enum comes from `choice!`, which cannot carry #[default]
impl Default for Allreduce {
    fn default() -> Self {
        Allreduce::Ordered
    }
}

#[cfg(feature = "mpi")]
static UNIVERSE: std::sync::Mutex<Option<mpi::environment::Universe>> = std::sync::Mutex::new(None);

/// (rank, size) as the launcher announced them in the environment, if a launcher started us.
pub fn launched() -> Option<(usize, usize)> {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<usize>().ok());
    for (size, rank) in [("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"), ("PMI_SIZE", "PMI_RANK"), ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID")] {
        if let Some(n) = var(size) {
            return Some((var(rank).unwrap_or(0), n));
        }
    }
    None
}

/// Join the MPI world if a launcher started this process with more than one rank; otherwise
/// (or when called again) the single-process world. Call once, first thing in `main`.
pub fn init() -> Result<&'static World> {
    if let Some(w) = WORLD.get() {
        return Ok(w);
    }
    let w = match launched() {
        Some((_, n)) if n > 1 => join_mpi(n)?,
        _ => World { rank: 0, size: 1 },
    };
    Ok(WORLD.get_or_init(|| w))
}

#[cfg(not(feature = "mpi"))]
fn join_mpi(n: usize) -> Result<World> {
    Err(Error::new(format!(
        "started as one of {n} MPI ranks, but this wick was built without the `mpi` feature: rebuild with `cargo build --release --features mpi` (needs libopenmpi-dev and libclang-dev), or run one process"
    )))
}

#[cfg(feature = "mpi")]
fn join_mpi(n: usize) -> Result<World> {
    use mpi::traits::Communicator;
    // Only the main thread calls MPI (Candle's worker threads never do).
    let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Funneled) else {
        return Err(Error::new("MPI was already initialised in this process"));
    };
    let comm = universe.world();
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    if size != n {
        return Err(Error::new(format!("the launcher announced {n} ranks but MPI's world has {size}")));
    }
    *UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()) = Some(universe);
    Ok(World { rank, size })
}

/// The world [`init`] joined; the single-process world if `init` was never called (library
/// users, unit tests).
pub fn world() -> &'static World {
    WORLD.get_or_init(|| World { rank: 0, size: 1 })
}

/// Leave the MPI world (`MPI_Finalize`); call before a successful exit. A no-op for one process.
pub fn finalize() {
    #[cfg(feature = "mpi")]
    {
        drop(node::NODE.lock().unwrap_or_else(|e| e.into_inner()).take());
        drop(UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

/// Stop every rank now (`MPI_Abort`) with exit code `code`; for one process, just exit.
/// Call after printing the one-line reason.
pub fn abort(code: i32) -> ! {
    #[cfg(feature = "mpi")]
    if world().size > 1 {
        use mpi::traits::Communicator;
        mpi::topology::SimpleCommunicator::world().abort(code);
    }
    std::process::exit(code)
}

impl World {
    /// A world of one process (rank 0 of 1), for code that takes a world but runs alone.
    pub fn single() -> World {
        World { rank: 0, size: 1 }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Rank 0, the one that writes TensorBoard, metrics and checkpoints.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Every rank's `local` (all the same length), concatenated in rank order.
    pub fn all_gather_f32(&self, local: &[f32]) -> Vec<f32> {
        if self.size == 1 {
            return local.to_vec();
        }
        self.gather_impl(local)
    }

    /// As [`World::all_gather_f32`], for f64.
    pub fn all_gather_f64(&self, local: &[f64]) -> Vec<f64> {
        if self.size == 1 {
            return local.to_vec();
        }
        self.gather_impl(local)
    }

    /// As [`World::all_gather_f32`], for u64.
    pub fn all_gather_u64(&self, local: &[u64]) -> Vec<u64> {
        if self.size == 1 {
            return local.to_vec();
        }
        self.gather_impl(local)
    }

    /// All-to-all: `send` is `size` equal blocks, block r goes to rank r; returns the blocks
    /// this rank received, in rank order (block r from rank r).
    pub fn all_to_all_f32(&self, send: &[f32]) -> Vec<f32> {
        if self.size == 1 {
            return send.to_vec();
        }
        self.all_to_all_impl(send)
    }

    /// Point-to-point exchange with every other rank, as one `MPI_Alltoallv` that leaves this
    /// rank out: `count` f32s from `send + sdispl[r]` go to rank r, and rank r's `count` f32s
    /// land at `recv + rdispl[r]`, for every r ≠ this rank (entry `rank` of both is ignored).
    ///
    /// # Safety
    /// The send blocks must be readable and the receive blocks writable for `count` f32s
    /// each, and no receive block may overlap a send block or another receive block (they
    /// may lie in the same allocation).
    pub unsafe fn exchange_with_others(&self, send: *const f32, sdispl: &[usize], recv: *mut f32, rdispl: &[usize], count: usize) {
        if self.size == 1 {
            return;
        }
        #[cfg(feature = "mpi")]
        {
            use mpi::datatype::Equivalence;
            use mpi::raw::AsRaw;
            let int = |v: usize| i32::try_from(v).expect("an exchange of more than 2^31 f32s");
            let counts: Vec<i32> = (0..self.size).map(|r| if r == self.rank { 0 } else { int(count) }).collect();
            let sd: Vec<i32> = sdispl.iter().map(|&d| int(d)).collect();
            let rd: Vec<i32> = rdispl.iter().map(|&d| int(d)).collect();
            let dt = f32::equivalent_datatype().as_raw();
            // SAFETY: the caller's contract above; the count arrays have one entry per rank.
            unsafe {
                mpi::ffi::MPI_Alltoallv(
                    send.cast(),
                    counts.as_ptr(),
                    sd.as_ptr(),
                    dt,
                    recv.cast(),
                    counts.as_ptr(),
                    rd.as_ptr(),
                    dt,
                    mpi::topology::SimpleCommunicator::world().as_raw(),
                );
            }
        }
        #[cfg(not(feature = "mpi"))]
        {
            let _ = (send, sdispl, recv, rdispl, count);
            unreachable!("a world of more than one rank needs the mpi feature")
        }
    }

    /// Every rank's `local` (lengths may differ), one vector per rank in rank order: the
    /// lengths are gathered first and the vectors padded to the longest.
    pub fn all_gather_var_f64(&self, local: &[f64]) -> Vec<Vec<f64>> {
        if self.size == 1 {
            return vec![local.to_vec()];
        }
        let lens = self.all_gather_u64(&[local.len() as u64]);
        let max = lens.iter().copied().max().unwrap_or(0) as usize;
        let mut padded = local.to_vec();
        padded.resize(max, 0.0);
        let all = self.all_gather_f64(&padded);
        lens.iter().enumerate().map(|(r, &n)| all[r * max..r * max + n as usize].to_vec()).collect()
    }

    /// The element-wise sum of every rank's `local` by `MPI_Allreduce`, in MPI's own order
    /// (which changes with N: see [`Allreduce::Ring`]).
    pub fn all_reduce_sum_f32(&self, local: &[f32]) -> Vec<f32> {
        if self.size == 1 {
            return local.to_vec();
        }
        self.reduce_impl(local)
    }

    /// As [`World::all_reduce_sum_f32`], for f64.
    pub fn all_reduce_sum_f64(&self, local: &[f64]) -> Vec<f64> {
        if self.size == 1 {
            return local.to_vec();
        }
        self.reduce_impl(local)
    }

    #[cfg(feature = "mpi")]
    fn reduce_impl<T: mpi::datatype::Equivalence + Copy + Default>(&self, local: &[T]) -> Vec<T> {
        use mpi::traits::CommunicatorCollectives;
        let mut out = vec![T::default(); local.len()];
        mpi::topology::SimpleCommunicator::world().all_reduce_into(local, &mut out[..], mpi::collective::SystemOperation::sum());
        out
    }

    #[cfg(not(feature = "mpi"))]
    fn reduce_impl<T: Copy>(&self, _local: &[T]) -> Vec<T> {
        unreachable!("a world of more than one rank needs the mpi feature")
    }

    #[cfg(feature = "mpi")]
    fn all_to_all_impl(&self, send: &[f32]) -> Vec<f32> {
        let block = send.len() / self.size;
        // SAFETY: MPI_Alltoall writes `block` f32s from each of the `size` ranks.
        unsafe { filled_by_mpi(send, block, send.len(), mpi::ffi::MPI_Alltoall) }
    }

    #[cfg(not(feature = "mpi"))]
    fn all_to_all_impl(&self, _send: &[f32]) -> Vec<f32> {
        unreachable!("a world of more than one rank needs the mpi feature")
    }

    #[cfg(feature = "mpi")]
    fn gather_impl<T: mpi::datatype::Equivalence + Copy + Default>(&self, local: &[T]) -> Vec<T> {
        // SAFETY: MPI_Allgather writes local.len() values from each of the `size` ranks.
        unsafe { filled_by_mpi(local, local.len(), local.len() * self.size, mpi::ffi::MPI_Allgather) }
    }

    #[cfg(not(feature = "mpi"))]
    fn gather_impl<T: Copy>(&self, _local: &[T]) -> Vec<T> {
        unreachable!("a world of more than one rank needs the mpi feature")
    }

    /// Rank 0's bytes on every rank (the others' `bytes` are replaced).
    pub fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        if self.size == 1 {
            return;
        }
        #[cfg(feature = "mpi")]
        {
            use mpi::traits::{Communicator, Root};
            let comm = mpi::topology::SimpleCommunicator::world();
            let root = comm.process_at_rank(0);
            let mut len = bytes.len() as u64;
            root.broadcast_into(&mut len);
            bytes.resize(len as usize, 0);
            root.broadcast_into(&mut bytes[..]);
        }
        #[cfg(not(feature = "mpi"))]
        let _ = bytes;
    }

    /// Rank 0's value on every rank.
    pub fn broadcast_f64(&self, v: f64) -> f64 {
        let mut b = v.to_le_bytes().to_vec();
        self.broadcast_bytes(&mut b);
        f64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
    }

    /// Stop with one line if `value` (a checksum of `what`) is not the same on every rank.
    pub fn check_same(&self, what: &str, value: u64) -> Result<()> {
        let all = self.all_gather_u64(&[value]);
        if let Some(r) = all.iter().position(|&v| v != all[0]) {
            return Err(Error::new(format!(
                "rank {r}'s {what} differs from rank 0's (checksum {:016x} vs {:016x}): every rank must run the same wick build with the same config and data",
                all[r], all[0]
            )));
        }
        Ok(())
    }
}

/// The result of a collective with `MPI_Alltoall`'s or `MPI_Allgather`'s signature, `count`
/// values of `send` per rank, received straight into fresh capacity for `n` values: no
/// zero-filling pass over the buffer before MPI overwrites it (a fifth of the gradient
/// combine's time when the buffers were filled).
///
/// # Safety
/// `collective` must write all `n` values (MPI's default error handler aborts on failure), and
/// `T` must be a plain number type (f32, f64, u64 here), for which every bit pattern is valid.
#[cfg(feature = "mpi")]
unsafe fn filled_by_mpi<T: mpi::datatype::Equivalence>(
    send: &[T],
    count: usize,
    n: usize,
    collective: unsafe extern "C" fn(*const std::ffi::c_void, i32, mpi::ffi::MPI_Datatype, *mut std::ffi::c_void, i32, mpi::ffi::MPI_Datatype, mpi::ffi::MPI_Comm) -> i32,
) -> Vec<T> {
    use mpi::raw::AsRaw;
    let mut out: Vec<T> = Vec::with_capacity(n);
    let count = i32::try_from(count).expect("a collective block of more than 2^31 values");
    let dt = T::equivalent_datatype().as_raw();
    // SAFETY: the caller's contract above; `out` has capacity for the n values written.
    unsafe {
        collective(send.as_ptr().cast(), count, dt, out.as_mut_ptr().cast(), count, dt, mpi::topology::SimpleCommunicator::world().as_raw());
        out.set_len(n);
    }
    out
}

/// The checkpoint at `path` as rank 0 reads it, on every rank (`None` if rank 0 has none), so
/// the other ranks need no shared file system.
pub fn load_checkpoint_from_root(path: &std::path::Path) -> Result<Option<crate::checkpoint::Checkpoint>> {
    let w = world();
    let mut bytes = Vec::new();
    if w.is_root() && path.exists() {
        bytes = std::fs::read(path).map_err(|e| Error::new(format!("reading checkpoint '{}': {e}", path.display())))?;
    }
    w.broadcast_bytes(&mut bytes);
    if bytes.is_empty() {
        return Ok(None);
    }
    crate::checkpoint::Checkpoint::from_bytes(&bytes, &format!("checkpoint '{}'", path.display())).map(Some)
}

/// At the start of a run, after init or resume: stop with one line unless every rank has the
/// same resolved config and the same parameters.
pub fn check_start(config_toml: &str, params: &Params) -> Result<()> {
    let w = world();
    if w.size() == 1 {
        return Ok(());
    }
    w.check_same("config", bytes_checksum(config_toml.as_bytes()))?;
    w.check_same("initial parameters", params_checksum(params)?)
}

/// Indices of `params` in sorted-name order: the order of every flat gradient vector.
pub fn sorted_order(params: &Params) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..params.len()).collect();
    idx.sort_by(|&a, &b| params.names()[a].cmp(&params.names()[b]));
    idx
}

/// Where a model that writes its own flat gradient slot ([`DataParallel::step_laid`]) puts each
/// entry: per parameter in sorted-name order, its number of entries and `None` for the
/// parameter's own row-major order or a [`Scatter`].
#[derive(Clone, Debug, Default)]
pub struct GradLayout {
    pub pieces: Vec<(usize, Option<Scatter>)>,
}

/// A `[rows, cols]` parameter whose gradient is written permuted, as a staircase packs it
/// (MADE's weights on units sorted by degree): entry (i, o) — at i·cols + o in the parameter —
/// lies at `row_at[i] + col_at[o]` of the parameter's place in the slot when
/// `col_at[o] ≥ from[i]`, and is zero otherwise (a masked-out weight).
#[derive(Clone, Debug)]
pub struct Scatter {
    pub cols: usize,
    pub row_at: Vec<u32>,
    pub from: Vec<u32>,
    pub col_at: Vec<u32>,
}

impl GradLayout {
    /// The gradient `laid` (written in this layout) in parameter order: each entry read where
    /// the layout puts it, zero off a scatter's staircase. For tests and checks; the
    /// data-parallel sum reads through the layout without building this.
    pub fn unlay(&self, laid: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(laid.len());
        let mut at = 0;
        for (n, piece) in &self.pieces {
            let part = &laid[at..at + n];
            match piece {
                None => out.extend_from_slice(part),
                Some(sc) => {
                    for (&base, &from) in sc.row_at.iter().zip(&sc.from) {
                        out.extend(sc.col_at.iter().map(|&c| if c >= from { part[base as usize + c as usize] } else { 0.0 }));
                    }
                }
            }
            at += n;
        }
        out
    }

    /// Every piece fits its parameter: one per parameter, `rows · cols` entries, every position
    /// inside the parameter's place (so the sum's reads stay in bounds).
    fn check(&self, params: &Params) -> Result<()> {
        let order = sorted_order(params);
        let ok = self.pieces.len() == order.len()
            && order.iter().zip(&self.pieces).all(|(&i, (n, piece))| {
                let n = *n;
                n == params.vars()[i].elem_count()
                    && piece.as_ref().is_none_or(|sc| {
                    sc.row_at.len() == sc.from.len()
                        && sc.col_at.len() == sc.cols
                        && sc.row_at.len() * sc.cols == n
                        && sc.col_at.iter().all(|&c| (c as usize) < sc.cols)
                        && sc.row_at.iter().all(|&r| r as usize + sc.cols <= n)
                })
            });
        if !ok {
            return Err(Error::new("a gradient layout does not fit the parameters (one piece per parameter, rows × cols entries, positions inside it)"));
        }
        Ok(())
    }
}

/// FNV-1a over every parameter's name, shape and f32 bits, in sorted-name order.
pub fn params_checksum(params: &Params) -> Result<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for i in sorted_order(params) {
        let v = &params.vars()[i];
        eat(params.names()[i].as_bytes());
        for d in v.dims() {
            eat(&(*d as u64).to_le_bytes());
        }
        for x in v.flatten_all()?.to_vec1::<f32>()? {
            eat(&x.to_bits().to_le_bytes());
        }
    }
    Ok(h)
}

/// FNV-1a of a byte string (a config's TOML, for [`World::check_same`]).
pub fn bytes_checksum(bytes: &[u8]) -> u64 {
    crate::rng::fnv1a64(&String::from_utf8_lossy(bytes))
}

/// The gradients of `grads` as one flat vector in sorted-name order; a parameter without a
/// gradient contributes zeros.
pub fn flatten_grads(params: &Params, grads: &GradStore) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(params.numel());
    flatten_grads_into(params, grads, &mut out)?;
    Ok(out)
}

/// [`flatten_grads`] appended to `out`; a contiguous CPU gradient is copied once, straight
/// from its storage.
pub fn flatten_grads_into(params: &Params, grads: &GradStore, out: &mut Vec<f32>) -> Result<()> {
    each_grad(params, grads, |g, n| match g {
        Some(g) => out.extend_from_slice(g),
        None => out.extend(std::iter::repeat_n(0.0f32, n)),
    })
}

/// `put(gradient, size)` for every parameter in sorted-name order, the gradient as host f32s
/// (straight from its storage where it is a contiguous CPU tensor), `None` where it has none.
fn each_grad(params: &Params, grads: &GradStore, mut put: impl FnMut(Option<&[f32]>, usize)) -> Result<()> {
    for i in sorted_order(params) {
        let v = &params.vars()[i];
        let n = v.elem_count();
        match grads.get(v.as_tensor()) {
            Some(g) => {
                let (s, l) = g.storage_and_layout();
                match (&*s, l.contiguous_offsets()) {
                    (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(d)), Some((a, b))) => put(Some(&d[a..b]), n),
                    _ => {
                        drop(s);
                        put(Some(&g.flatten_all()?.to_vec1::<f32>()?), n)
                    }
                }
            }
            None => put(None, n),
        }
    }
    Ok(())
}

/// A `GradStore` holding `flat` (sorted-name order, as [`flatten_grads`]; at least P entries)
/// for every parameter: one tensor on the parameters' device, each gradient a view of it.
pub fn unflatten_grads(params: &Params, mut flat: Vec<f32>) -> Result<GradStore> {
    let mut grads = GradStore::default();
    let Some(first) = params.vars().first() else { return Ok(grads) };
    let p = params.numel();
    flat.truncate(p);
    let all = Tensor::from_vec(flat, p, first.device())?;
    let mut off = 0;
    for i in sorted_order(params) {
        let v = &params.vars()[i];
        let n = v.elem_count();
        grads.insert(v.as_tensor(), all.narrow(0, off, n)?.reshape(v.dims())?);
        off += n;
    }
    Ok(grads)
}

/// Rows `[lo, hi)` of micro-batch `s` of `m` in a batch of `b` rows: contiguous, in order,
/// sizes differing by at most one (equal when `m` divides `b`).
pub fn micro_range(b: usize, m: usize, s: usize) -> (usize, usize) {
    (s * b / m, (s + 1) * b / m)
}

/// The combined step of one global batch.
pub struct Combined {
    /// ℓ = Σ (n_s/b) ℓ_s, the batch's mean loss.
    pub loss: f64,
    grads: Grads,
    /// Some rank saw Ctrl-C (all ranks stop after this step, together).
    pub interrupted: bool,
}

/// Where a combined gradient is.
enum Grads {
    Whole(GradStore),
    /// In the node's shared window, each rank's micro-batch gradients in its segment, their sum
    /// not taken yet (see `node`). Taken by [`DataParallel::update`] or [`Combined::into_grads`]
    /// before the next step.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    Node { rank: usize, size: usize, sum: Pending },
}

/// A node window's ordered sum not taken yet: every rank's micro-batch gradients wait in the
/// window, and [`DataParallel::update`] sums each of its cards just before updating it (while
/// it is in cache), or [`Combined::into_grads`] sums and gathers the whole.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
struct Pending {
    /// Every micro-batch's weight, in order.
    weights: Vec<f64>,
    /// How the shards laid their gradients out, if not in parameter order.
    layout: Option<GradLayout>,
    /// Where the sum's time is added ([`DataParallel::combine_seconds`]).
    combine_ns: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Combined {
    /// The whole gradient of a step combined in one process (tests).
    #[cfg(test)]
    fn whole(&self) -> &GradStore {
        match &self.grads {
            Grads::Whole(g) => g,
            Grads::Node { .. } => panic!("the gradient waits in the node window"),
        }
    }

    /// A step's loss, whole gradient and Ctrl-C flag (a step taken without the combine).
    pub fn new(loss: f64, grads: GradStore, interrupted: bool) -> Combined {
        Combined { loss, grads: Grads::Whole(grads), interrupted }
    }

    /// The whole combined gradient. Where the ranks' gradients wait in the node's window this
    /// sums them (each rank its cards) and gathers the sums: a collective, which every rank must call at the same step (as it
    /// must [`DataParallel::update`]).
    pub fn into_grads(self, params: &Params) -> Result<GradStore> {
        match self.grads {
            Grads::Whole(g) => Ok(g),
            #[cfg(feature = "mpi")]
            Grads::Node { rank, size, sum } => {
                let (world, p, t) = (World { rank, size }, params.numel(), std::time::Instant::now());
                node::sum(&world, &sum.weights, p, sum.layout.as_ref());
                let g = node::gather(&world, p);
                sum.combine_ns.fetch_add(t.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
                unflatten_grads(params, g)
            }
            #[cfg(not(feature = "mpi"))]
            Grads::Node { .. } => {
                let _ = params;
                unreachable!("the node window needs the mpi feature")
            }
        }
    }
}

/// How one process takes part in a data-parallel step; see the module docs.
#[derive(Clone, Debug)]
pub struct DataParallel {
    /// M, micro-batches per global batch (all ranks together).
    pub micro_batches: usize,
    rank: usize,
    size: usize,
    /// The ordered combine (default) or MPI's all-reduce; see [`DataParallel::with_allreduce`].
    allreduce: Allreduce,
    /// Wall-clock seconds spent combining (the collectives and the sum), summed over steps, in
    /// nanoseconds; shared by clones. Timing only: it never touches the arithmetic.
    combine_ns: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// With the `nccl` feature, on a CUDA device and more than one rank: gradients are
    /// gathered on the GPUs by NCCL instead of through the host by MPI.
    #[cfg(feature = "nccl")]
    nccl: Option<nccl::Nccl>,
}

impl DataParallel {
    /// M micro-batches per batch of `batch` rows, shared by the ranks of `world`.
    pub fn new(micro_batches: usize, batch: usize, world: &World) -> Result<DataParallel> {
        let (m, n) = (micro_batches, world.size());
        if m == 0 {
            return Err(Error::new("--micro-batches must be at least 1"));
        }
        if m % n != 0 {
            let divisors: Vec<String> = (1..=m).filter(|d| m % d == 0).map(|d| d.to_string()).collect();
            return Err(Error::new(format!(
                "this run splits each batch into {m} micro-batches, which {n} ranks cannot share: launch a number of ranks that divides {m} ({}), or start a run with --micro-batches {n}",
                divisors.join(", ")
            )));
        }
        if batch % m != 0 {
            return Err(Error::new(format!(
                "--batch {batch} is not divisible into {m} micro-batches ({n} rank(s)): choose a batch that is a multiple of {m}"
            )));
        }
        Ok(DataParallel {
            micro_batches: m,
            rank: world.rank(),
            size: n,
            allreduce: Allreduce::Ordered,
            combine_ns: Default::default(),
            #[cfg(feature = "nccl")]
            nccl: None,
        })
    }

    /// Gather gradients with NCCL when `device` is a GPU and there is more than one rank (the
    /// `nccl` feature); otherwise, or without the feature, through the host with MPI.
    pub fn on_device(self, device: &candle_core::Device) -> Result<DataParallel> {
        #[cfg(feature = "nccl")]
        if device.is_cuda() && self.size > 1 {
            return Ok(DataParallel { nccl: Some(nccl::connect(device)?), ..self });
        }
        let _ = device;
        Ok(self)
    }

    /// Combine with `how`: [`Allreduce::Ring`] gives up bit-identity across N (MPI's
    /// summation order) for ring-like bytes; see docs/distributed.md's cost model. The NCCL
    /// path ignores it (it gathers in order).
    pub fn with_allreduce(self, how: Allreduce) -> DataParallel {
        DataParallel { allreduce: how, ..self }
    }

    /// Seconds this process has spent in the combine (collectives and the ordered sum) of its
    /// steps so far, for metrics.json's `combine_seconds`; 0 with one micro-batch.
    pub fn combine_seconds(&self) -> f64 {
        self.combine_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 * 1e-9
    }

    /// One global batch of `b` rows: `shard(lo, hi)` returns the mean loss and gradients of
    /// rows `[lo, hi)` of the batch; it is called for this rank's micro-batches only. Returns
    /// the ordered combination of all M micro-batches, the same on every rank.
    pub fn step(&self, params: &Params, b: usize, mut shard: impl FnMut(usize, usize) -> Result<(f64, GradStore)>) -> Result<Combined> {
        self.step_into(params, b, |lo, hi, _| shard(lo, hi).map(|(loss, g)| (loss, Some(g))))
    }

    /// As [`DataParallel::step`], with a place for the gradients: where the combine reads them
    /// from the node's window, `shard(lo, hi, Some(flat))` may write them straight into `flat`
    /// (P f32s, sorted-name order, old contents to overwrite) and return `None` for them, which
    /// saves a copy of P values per micro-batch; otherwise (`None` given, or gradients
    /// returned) they are flattened as `step` does.
    pub fn step_into(&self, params: &Params, b: usize, shard: impl FnMut(usize, usize, Option<&mut [f32]>) -> Result<(f64, Option<GradStore>)>) -> Result<Combined> {
        self.step_laid(params, b, None, shard)
    }

    /// As [`DataParallel::step_into`], where a shard that writes into the offered slot itself
    /// (returning `None` for its gradients) lays it out as `layout` says instead of in parameter
    /// order (MADE's gradients stay in the staircase's sorted order): the ordered sum then reads
    /// each entry where the layout puts it, so no rank unpacks its own gradients and each
    /// entry's sum is the same sequence. A shard that returns its gradients is flattened in
    /// parameter order as before; the micro-batches of one step must all do the one or the other.
    pub fn step_laid(&self, params: &Params, b: usize, layout: Option<GradLayout>, mut shard: impl FnMut(usize, usize, Option<&mut [f32]>) -> Result<(f64, Option<GradStore>)>) -> Result<Combined> {
        let m = self.micro_batches;
        let whole = |g: Option<GradStore>| g.ok_or_else(no_grads);
        if m == 1 {
            let (loss, grads) = shard(0, b, None)?;
            return Ok(Combined::new(loss, whole(grads)?, crate::signal::interrupted()));
        }
        #[cfg(feature = "nccl")]
        if let Some(nccl) = &self.nccl {
            return nccl.step(self, params, b, |lo, hi| shard(lo, hi, None).and_then(|(l, g)| Ok((l, whole(g)?))));
        }
        let per = m / self.size;
        let p = params.numel();
        // Per local micro-batch: [weight n_s/b, loss]; then this rank's Ctrl-C flag.
        let mut head = Vec::with_capacity(2 * per + 1);
        let mut flat = self.parts(per, p);
        if let Some(layout) = &layout {
            layout.check(params)?;
        }
        for s in self.rank * per..(self.rank + 1) * per {
            let (lo, hi) = micro_range(b, m, s);
            if hi > lo {
                let loss = flat.fill(params, layout.is_some(), |slot| shard(lo, hi, slot))?;
                head.extend([(hi - lo) as f64 / b as f64, loss]);
            } else {
                head.extend([0.0, 0.0]);
                flat.zeros(p);
            }
        }
        self.combine(params, head, flat, layout)
    }

    /// As [`DataParallel::step`], for micro-batches the caller cuts itself (REINFORCE's shares
    /// of an update's episodes, of unequal lengths): `shard(s)` returns micro-batch s's weight
    /// w_s (the weights of all M sum to 1), mean loss and gradients, and is called for this
    /// rank's micro-batches only, in order. Returns g = Σ_s w_s g_s, ℓ = Σ_s w_s ℓ_s, combined
    /// as `step` combines. With one micro-batch, the shard's own gradients (w_0 = 1).
    pub fn step_weighted(&self, params: &Params, mut shard: impl FnMut(usize) -> Result<(f64, f64, GradStore)>) -> Result<Combined> {
        if self.micro_batches == 1 {
            let (_, loss, grads) = shard(0)?;
            return Ok(Combined::new(loss, grads, crate::signal::interrupted()));
        }
        let per = self.micro_batches / self.size;
        let p = params.numel();
        let mut head = Vec::with_capacity(2 * per + 1);
        let mut flat = self.parts(per, p);
        for s in self.rank * per..(self.rank + 1) * per {
            let (w, loss, grads) = shard(s)?;
            head.extend([w, loss]);
            flat.grads(params, &grads)?;
        }
        self.combine(params, head, flat, None)
    }

    /// The combine of `step`, `step_weighted` and `step_gathered`: `head` holds this rank's
    /// [w_s, ℓ_s] per local micro-batch, `flat` their flat gradients (`per` × P f32s); timed into
    /// [`DataParallel::combine_seconds`].
    fn combine(&self, params: &Params, mut head: Vec<f64>, flat: Parts, layout: Option<GradLayout>) -> Result<Combined> {
        #[cfg(not(feature = "mpi"))]
        let _ = layout;
        let t = std::time::Instant::now();
        let per = self.micro_batches / self.size;
        let p = params.numel();
        head.push(crate::signal::interrupted() as u8 as f64);
        let world = World { rank: self.rank, size: self.size };
        let (loss, g, interrupted) = match self.allreduce {
            Allreduce::Ordered => {
                let heads = world.all_gather_f64(&head);
                let (mut loss, mut interrupted) = (0.0f64, false);
                let mut weights = Vec::with_capacity(self.micro_batches);
                for h in heads.chunks_exact(2 * per + 1) {
                    interrupted |= h[2 * per] != 0.0;
                    for k in 0..per {
                        let (w, l) = (h[2 * k], h[2 * k + 1]);
                        if w != 0.0 {
                            loss += w * l; // w = 0: an empty micro-batch (a short last batch) adds nothing
                        }
                        weights.push(w);
                    }
                }
                let flat = match flat {
                    Parts::Host(flat) => flat,
                    #[cfg(feature = "mpi")]
                    Parts::Node { laid, .. } => {
                        // The sum waits for the update (or into_grads), which takes it card by card.
                        let sum = Pending { weights, layout: layout.filter(|_| laid == Some(true)), combine_ns: self.combine_ns.clone() };
                        self.combine_ns.fetch_add(t.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
                        return Ok(Combined { loss, grads: Grads::Node { rank: self.rank, size: self.size, sum }, interrupted });
                    }
                };
                (loss, ordered_sum(&world, &weights, flat, p), interrupted)
            }
            Allreduce::Ring => {
                // This rank's weighted sum in f64, rounded to f32, then MPI's sum over ranks.
                let weights: Vec<f64> = (0..per).map(|k| head[2 * k]).collect();
                let local_loss = (0..per).filter(|&k| head[2 * k] != 0.0).fold(0.0f64, |a, k| a + head[2 * k] * head[2 * k + 1]);
                let mut local = vec![0.0f32; p];
                weighted_sum(&mut local, &weights, &flat.into_host(), p);
                let sums = world.all_reduce_sum_f64(&[local_loss, head[2 * per]]);
                (sums[0], world.all_reduce_sum_f32(&local), sums[1] != 0.0)
            }
        };
        self.combine_ns.fetch_add(t.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(Combined::new(loss, unflatten_grads(params, g)?, interrupted))
    }

    /// `opt.step(params, g, lr)` with the step's combined gradient g, on every rank. Where the
    /// ranks share a node and `opt` is Adam/AdamW on the fused CPU update, the update is sharded
    /// instead: rank r sums and updates its cards of the flat parameters (see `node`: its share
    /// of m and v) and the ranks read each other's updated cards from the node's window.
    /// Each entry gets the arithmetic of `opt.step`, so the bits are the same; each rank does 1/N
    /// of the optimizer's passes over memory, and the optimizer state is left sharded until
    /// [`DataParallel::sync_optimizer`]. A collective: every rank calls it at the same step.
    pub fn update(&self, opt: &mut crate::optim::Optimizer, params: &Params, combined: Combined, lr: f64) -> Result<()> {
        #[cfg(feature = "mpi")]
        if let Grads::Node { rank, size, sum } = &combined.grads {
            if opt.steps_flat(params) {
                return node::update(&World { rank: *rank, size: *size }, opt, params, lr, sum);
            }
        }
        opt.step(params, &combined.into_grads(params)?, lr)
    }

    /// Bring every rank's share of the optimizer state back after sharded updates
    /// ([`DataParallel::update`]), so that it can be saved: all-gathers each rank's slice of m
    /// and v. A collective, called on every rank before a checkpoint is built; nothing to do
    /// (and no communication) when the state is whole.
    pub fn sync_optimizer(&self, opt: &mut crate::optim::Optimizer, params: &Params) -> Result<()> {
        if !opt.is_sharded() {
            return Ok(());
        }
        let (n, p, world) = (self.size, params.numel(), World { rank: self.rank, size: self.size });
        let c = owned_cap(p, n);
        let order = sorted_order(params);
        for k in 0..2 {
            let mut local = Vec::with_capacity(c);
            for range in owned(self.rank, p, n) {
                local.extend(opt.flat_state(params, &order, k, range)?);
            }
            local.resize(c, 0.0);
            let all = world.all_gather_f32(&local);
            for r in (0..n).filter(|&r| r != self.rank) {
                for (pos, range) in owned_at(r, p, n) {
                    let at = r * c + pos;
                    opt.set_flat_state(params, &order, k, range.clone(), &all[at..at + range.len()])?;
                }
            }
        }
        opt.mark_whole();
        Ok(())
    }
}

/// This rank's micro-batches' flat gradients (P f32s each, in order), written where the combine
/// reads them: straight into this rank's segment of the node window where the ordered combine
/// goes through it (no copy), otherwise into a vector.
enum Parts {
    Host(Vec<f32>),
    /// Micro-batch k's gradient at `base + k·P`, `filled` entries written so far (the segment
    /// holds M/N of them; see `node`).
    /// `laid`: whether the shards wrote the slots themselves in the step's [`GradLayout`]
    /// (None until the first micro-batch tells).
    #[cfg(feature = "mpi")]
    Node { base: *mut f32, filled: usize, laid: Option<bool> },
}

/// A shard that was offered no slot must return its gradients.
fn no_grads() -> Error {
    Error::new("a shard returned no gradients where no flat buffer was given")
}

impl Parts {
    /// Append one micro-batch's gradients (sorted-name order; zeros where one has none).
    fn grads(&mut self, params: &Params, grads: &GradStore) -> Result<()> {
        match self {
            Parts::Host(v) => flatten_grads_into(params, grads, v),
            #[cfg(feature = "mpi")]
            Parts::Node { base, filled, .. } => {
                let p = params.numel();
                // SAFETY: the segment has room for M/N gradients of P (checked at allocation) and
                // the caller appends at most that many; the others read it only after the sum's
                // first fence, and the previous step's readers are past its last one.
                let out = unsafe { std::slice::from_raw_parts_mut(base.add(*filled), p) };
                let mut at = 0;
                each_grad(params, grads, |g, n| {
                    match g {
                        Some(g) => out[at..at + n].copy_from_slice(g),
                        None => out[at..at + n].fill(0.0),
                    }
                    at += n;
                })?;
                *filled += p;
                Ok(())
            }
        }
    }

    /// Append one micro-batch's gradients as `f` gives them: written into the slot it is
    /// offered (the window's, where there is one) or returned. Returns its loss.
    /// `layout`: whether the step has a [`GradLayout`] that a shard writing the slot itself uses.
    fn fill(&mut self, params: &Params, layout: bool, f: impl FnOnce(Option<&mut [f32]>) -> Result<(f64, Option<GradStore>)>) -> Result<f64> {
        #[cfg(not(feature = "mpi"))]
        let _ = layout; // only the node window reads a layout
        match self {
            Parts::Host(_) => {
                let (loss, grads) = f(None)?;
                self.grads(params, &grads.ok_or_else(no_grads)?)?;
                Ok(loss)
            }
            #[cfg(feature = "mpi")]
            Parts::Node { base, filled, laid } => {
                let p = params.numel();
                // SAFETY: as in `grads`: the next P entries of this rank's segment.
                let slot = unsafe { std::slice::from_raw_parts_mut(base.add(*filled), p) };
                let (loss, grads) = f(Some(slot))?;
                let now = grads.is_none() && layout;
                if laid.is_some_and(|was| was != now) {
                    return Err(Error::new("the micro-batches of one step wrote their gradients in different layouts"));
                }
                *laid = Some(now);
                match grads {
                    Some(g) => self.grads(params, &g)?,
                    None => *filled += p,
                }
                Ok(loss)
            }
        }
    }

    /// Append an empty micro-batch's gradient (P zeros).
    fn zeros(&mut self, p: usize) {
        match self {
            Parts::Host(v) => v.extend(std::iter::repeat_n(0.0f32, p)),
            #[cfg(feature = "mpi")]
            Parts::Node { base, filled, .. } => {
                // SAFETY: as in `grads`.
                unsafe { std::slice::from_raw_parts_mut(base.add(*filled), p) }.fill(0.0);
                *filled += p;
            }
        }
    }

    /// The vector (only where the combine does not go through the window).
    fn into_host(self) -> Vec<f32> {
        match self {
            Parts::Host(v) => v,
            #[cfg(feature = "mpi")]
            Parts::Node { .. } => unreachable!("the window's parts are summed in place"),
        }
    }
}

impl DataParallel {
    /// Where this step's `per` local gradients of `p` go: the node window for the ordered
    /// combine over several ranks on the CPU (allocated here at the first step, a collective
    /// every rank reaches at the same step), else a vector.
    fn parts(&self, per: usize, p: usize) -> Parts {
        #[cfg(feature = "mpi")]
        if self.allreduce == Allreduce::Ordered && self.size > 1 {
            if let Some(base) = node::segment(&World { rank: self.rank, size: self.size }, p, per) {
                return Parts::Node { base, filled: 0, laid: None };
            }
        }
        Parts::Host(Vec::with_capacity(per * p + self.size)) // + the all-to-all's padding
    }
}

/// `out[i] = Σ_s w_s · parts_s[i]` over the micro-batches s with w_s ≠ 0, in order,
/// accumulated in f64 from 0 and rounded to f32 once; `parts` holds the micro-batches' vectors
/// one after another, `stride` f32s apart.
fn weighted_sum(out: &mut [f32], weights: &[f64], parts: &[f32], stride: usize) {
    let used: Vec<(f64, &[f32])> = weights.iter().enumerate().map(|(s, &w)| (w, &parts[s * stride..s * stride + out.len()])).collect();
    // SAFETY: a `[f32]` viewed as `[MaybeUninit<f32>]` (same layout); only f32s are written.
    let out = unsafe { &mut *(out as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) };
    weighted_sum_parts(out, &used);
}

/// `out[i] = Σ_s w_s · x_s[i]` over the pairs (w_s, x_s) of `parts` with w_s ≠ 0, in order,
/// accumulated in f64 from 0 and rounded to f32 once; writes every entry of `out` (which may
/// be uninitialised). Blocked so the f64 accumulators stay in registers and cache: every
/// element's sum is the same left-to-right sequence whatever the block.
///
/// Compiled for AVX-512F and AVX2 besides the baseline and chosen at run time: the same
/// operations in the same order on every path (Rust never fuses a multiply and an add), so the
/// same bits; the wider paths only convert and accumulate more entries per instruction.
fn weighted_sum_parts(out: &mut [std::mem::MaybeUninit<f32>], parts: &[(f64, &[f32])]) {
    use std::mem::MaybeUninit;
    #[inline(always)]
    fn body(out: &mut [MaybeUninit<f32>], parts: &[(f64, &[f32])]) {
        const BLOCK: usize = 512;
        let mut acc = [0.0f64; BLOCK];
        for (b, chunk) in out.chunks_mut(BLOCK).enumerate() {
            let acc = &mut acc[..chunk.len()];
            acc.fill(0.0);
            for &(w, x) in parts.iter().filter(|(w, _)| *w != 0.0) {
                for (a, &x) in acc.iter_mut().zip(&x[b * BLOCK..b * BLOCK + chunk.len()]) {
                    *a += w * x as f64;
                }
            }
            for (o, &a) in chunk.iter_mut().zip(acc.iter()) {
                o.write(a as f32);
            }
        }
    }
    for (_, x) in parts {
        assert!(x.len() >= out.len(), "weighted_sum: a part of {} entries for a sum of {}", x.len(), out.len());
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(out: &mut [MaybeUninit<f32>], parts: &[(f64, &[f32])]) {
            body(out, parts)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(out: &mut [MaybeUninit<f32>], parts: &[(f64, &[f32])]) {
            body(out, parts)
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is available (checked just above).
            return unsafe { avx512(out, parts) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked just above).
            return unsafe { avx2(out, parts) };
        }
    }
    body(out, parts)
}

/// [`weighted_sum_parts`] for the entries `[a, a + out.len())` of one `[rows, cols]` parameter
/// whose parts are laid out by `sc` (each part is the parameter's whole place): entry
/// j = i·cols + o is `Σ_s w_s · x_s[row_at[i] + col_at[o]]` where `col_at[o] ≥ from[i]`, zero
/// elsewhere; the same f64 accumulation from 0 in part order, so the same bits as unpacking
/// every part and summing.
///
/// Row by row: the entries a row keeps lie together in the parts (`row_at[i] + from[i] ..
/// row_at[i] + cols`, a staircase row), so they are summed there contiguously, and the row's
/// entries are then picked from that sum in parameter order (one gather instead of one per part).
#[cfg_attr(not(feature = "mpi"), allow(dead_code))] // the node window's sum (and the tests)
fn weighted_gather_parts(out: &mut [std::mem::MaybeUninit<f32>], parts: &[(f64, &[f32])], sc: &Scatter, a: usize) {
    use std::mem::MaybeUninit;
    /// `dst[o] = row[at[o]]` where `at[o] ≥ from`, else 0.
    #[inline(always)]
    fn pick(dst: &mut [MaybeUninit<f32>], row: &[f32], from: u32, at: &[u32]) {
        for (d, &c) in dst.iter_mut().zip(at) {
            d.write(if c >= from { row[c as usize] } else { 0.0 });
        }
    }
    /// `pick`, 16 entries at a time with a masked gather (the rest by `pick`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn pick_avx512(dst: &mut [MaybeUninit<f32>], row: &[f32], from: u32, at: &[u32]) {
        use std::arch::x86_64::*;
        let n = dst.len().min(at.len());
        let lim = _mm512_set1_epi32(from as i32);
        let mut o = 0;
        while o + 16 <= n {
            // SAFETY: o + 16 ≤ n entries of `at` and `dst`; every position at[·] < cols = row.len()
            // (GradLayout::check), and only the lanes with at[·] ≥ from are read.
            unsafe {
                let c = _mm512_loadu_si512(at.as_ptr().add(o).cast());
                let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), _mm512_cmpge_epu32_mask(c, lim), c, row.as_ptr());
                _mm512_storeu_ps(dst.as_mut_ptr().add(o).cast(), v);
            }
            o += 16;
        }
        pick(&mut dst[o..], row, from, &at[o..]);
    }
    #[cfg(target_arch = "x86_64")]
    let wide = std::is_x86_feature_detected!("avx512f");
    let cols = sc.cols;
    // The sum of one row's kept entries, in the parts' (sorted) order; entries before `from`
    // are never picked.
    let mut row = vec![0f32; cols];
    let mut views: Vec<(f64, &[f32])> = Vec::with_capacity(parts.len());
    let (mut j, end, mut k) = (a, a + out.len(), 0);
    while j < end {
        let (i, o0) = (j / cols, j % cols);
        let o1 = cols.min(o0 + (end - j));
        let (base, from) = (sc.row_at[i] as usize, sc.from[i]);
        let f = (from as usize).min(cols);
        views.clear();
        views.extend(parts.iter().map(|&(w, x)| (w, &x[base + f..base + cols])));
        // SAFETY: `[f32]` viewed as `[MaybeUninit<f32>]`; only f32s are written.
        weighted_sum_parts(unsafe { &mut *(&mut row[f..] as *mut [f32] as *mut [MaybeUninit<f32>]) }, &views);
        let (dst, at) = (&mut out[k..k + (o1 - o0)], &sc.col_at[o0..o1]);
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: AVX-512F is available (checked above).
            unsafe { pick_avx512(dst, &row, from, at) };
        } else {
            pick(dst, &row, from, at);
        }
        #[cfg(not(target_arch = "x86_64"))]
        pick(dst, &row, from, at);
        k += o1 - o0;
        j += o1 - o0;
    }
}

/// Rank r's slice of P flat entries shared by N ranks: C = ⌈P/N⌉ entries from r·C, cut at P
/// (the last slices may be short or empty).
fn shard_range(r: usize, p: usize, n: usize) -> std::ops::Range<usize> {
    let c = p.div_ceil(n);
    (r * c).min(p)..((r + 1) * c).min(p)
}

/// Entries per card of [`owned`]: at most 2¹⁴, and at least 256 or a quarter of a rank's share,
/// so that even a small model is dealt several cards per rank (and the tests' models exercise it).
fn card(p: usize, n: usize) -> usize {
    p.div_ceil(4 * n).clamp(256, 1 << 14)
}

/// The flat ranges rank r sums and updates where the ranks share a node's window: the P entries
/// cut into [`card`]s, dealt out in turn (card k to rank k mod N), in order. Dealt
/// rather than cut into N slices, so that a region of costly entries — Adam's on weights whose
/// gradients are mostly zero, where m and v sink into subnormal numbers and every operation on
/// them is many times slower — is shared by all ranks instead of stalling one while the others
/// wait at the fence.
fn owned(r: usize, p: usize, n: usize) -> Vec<std::ops::Range<usize>> {
    let c = card(p, n);
    (r * c..p).step_by(n * c).map(|lo| lo..(lo + c).min(p)).collect()
}

/// [`owned`], each card with its position in the rank's share as the window stores it (the
/// rank's cards one after another).
fn owned_at(r: usize, p: usize, n: usize) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> {
    owned(r, p, n).into_iter().scan(0, |pos, range| {
        let at = *pos;
        *pos += range.len();
        Some((at, range))
    })
}

/// Room for one rank's entries of [`owned`] (rank 0 has the most).
fn owned_cap(p: usize, n: usize) -> usize {
    owned(0, p, n).iter().map(|r| r.len()).sum()
}

/// g = Σ_{s=0}^{M−1} w_s g_s, summed in micro-batch order in f64 and rounded to f32, on every
/// rank: the same bits for any N. `weights` holds all M weights (every rank's, in order), `flat`
/// this rank's M/N gradients of `p` f32s each.
///
/// The sum is sharded like a reduce-scatter: the P entries are cut into N slices of C = ⌈P/N⌉,
/// one all-to-all hands rank r slice r of every micro-batch's gradient, rank r sums its slice
/// in micro-batch order, and a second exchange (an all-gather) returns the N summed slices to
/// every rank. Each entry's sum is the same sequence as one process's, so the bits do not
/// depend on N; each rank receives 2·(N−1)·C f32s (a ring all-reduce's bytes) and sums P/N
/// entries, not P. Neither exchange copies a rank's own blocks: its micro-batches' own slice is
/// read where it lies, and the summed slice is written straight into its place in the result.
fn ordered_sum(world: &World, weights: &[f64], mut flat: Vec<f32>, p: usize) -> Vec<f32> {
    let n = world.size();
    let per = weights.len() / n;
    if n == 1 {
        let mut g = vec![0.0f32; p];
        weighted_sum(&mut g, weights, &flat, p);
        return g;
    }
    let (rank, c) = (world.rank(), p.div_ceil(n));
    // Send buffer: for each destination rank r, this rank's micro-batches' slice r, padded to C.
    let send = if per == 1 {
        flat.resize(n * c, 0.0);
        flat
    } else {
        let mut send = vec![0.0f32; n * per * c];
        for r in 0..n {
            let std::ops::Range { start: lo, end: hi } = shard_range(r, p, n);
            for k in 0..per {
                send[(r * per + k) * c..(r * per + k) * c + hi - lo].copy_from_slice(&flat[k * p + lo..k * p + hi]);
            }
        }
        send
    };
    // From each other rank r (in rank order, this one left out): its micro-batches
    // r·per … (r+1)·per − 1, our slice of each.
    let blk = per * c;
    let mut others: Vec<f32> = Vec::with_capacity((n - 1) * blk);
    let at = |r: usize| if r < rank { r } else { r - 1 }; // r's block in `others`
    let sdispl: Vec<usize> = (0..n).map(|r| r * blk).collect();
    let rdispl: Vec<usize> = (0..n).map(|r| if r == rank { 0 } else { at(r) * blk }).collect();
    // SAFETY: every other rank's `blk` f32s land in `others`' capacity at at(r)·blk, which
    // covers all (n − 1)·blk entries; the send blocks lie inside `send`.
    unsafe {
        world.exchange_with_others(send.as_ptr(), &sdispl, others.as_mut_ptr(), &rdispl, blk);
        others.set_len((n - 1) * blk);
    }
    let mine = shard_range(rank, p, n);
    let parts: Vec<(f64, &[f32])> = (0..n * per)
        .map(|s| {
            let (r, k) = (s / per, s % per);
            let at_s = if r == rank { &send[(rank * per + k) * c..] } else { &others[(at(r) * per + k) * c..] };
            (weights[s], &at_s[..mine.len()])
        })
        .collect();
    let mut g: Vec<f32> = Vec::with_capacity(n * c);
    {
        let own = &mut g.spare_capacity_mut()[rank * c..(rank + 1) * c];
        weighted_sum_parts(&mut own[..mine.len()], &parts);
        own[mine.len()..].iter_mut().for_each(|x| _ = x.write(0.0)); // the last slice's padding
    }
    drop(parts);
    drop(others);
    drop(send);
    // Every rank's summed slice into its place; this rank's own is already there.
    // The send and receive pointers differ (MPICH refuses a send buffer equal to the receive
    // buffer, its test for aliasing): sent from this rank's block, received from the first
    // block that is not this rank's.
    let base = g.as_mut_ptr();
    let first = usize::from(rank == 0);
    let rdispl: Vec<usize> = (0..n).map(|r| if r == rank { 0 } else { (r - first) * c }).collect();
    // SAFETY: the block sent (this rank's, written above) and the n − 1 blocks received are
    // disjoint parts of `g`'s capacity, which together they fill; after the call every entry
    // of the n·c is written.
    unsafe {
        world.exchange_with_others(base.add(rank * c), &vec![0; n], base.add(first * c), &rdispl, c);
        g.set_len(n * c);
    }
    g.truncate(p);
    g
}

/// The ordered combine through one MPI-3 shared-memory window, for ranks that share a node,
/// and the sharded optimizer update it allows.
///
/// `MPI_Alltoallv` between ranks on one host copies every block (into a shared-memory segment
/// and out of it, or across address spaces), and afterwards every rank runs the optimizer over
/// all P parameters on its one thread. When every rank of the world is on one node
/// (`MPI_Comm_split_type` with `MPI_COMM_TYPE_SHARED` keeps them all), the step instead uses a
/// window from `MPI_Win_allocate_shared` in which rank r's segment holds its micro-batches' flat
/// gradients (M/N × P f32s), room for its summed share and its updated parameter share. A rank's
/// share is not a slice but the cards [`owned`] deals it (card k of up to 2¹⁴ entries to rank
/// k mod N), so that a costly region (Adam on subnormal m and v) does not fall to one rank:
///
/// ```text
/// rank r: its gradients, written straight into its segment (in parameter order, or in the
///         model's own GradLayout, read through it below)
/// then either (DataParallel::update, Adam/AdamW on the CPU):
///                                                             sync, barrier, sync
///   rank r, card by card: g = Σ_s w_s g_s on the card, read from every segment, into a buffer;
///           Adam on the card's θ, m, v → θ into its segment
///                                                             sync, barrier, sync
///   rank r: the other ranks' cards of θ, read from their segments → its parameters
/// or (Combined::into_grads: clipping, REINFORCE's norm, other optimizers):
///                                                             sync, barrier, sync
///   rank r: its cards of g → its segment                     sync, barrier, sync
///   rank r: every rank's cards → the whole gradient
/// ```
///
/// Each entry's sum is the all-to-all path's left-to-right sequence ([`weighted_sum_parts`]
/// over the same parts in micro-batch order) and each entry's update is `Optimizer::step`'s
/// (the optimizer's update is element-wise), so the bits are the same as one process's with
/// `--micro-batches M`. Each rank does 1/N of the optimizer's passes over memory; its shares of
/// m and v are brought together by `DataParallel::sync_optimizer` before a checkpoint. A segment
/// is rewritten only after the barrier that follows everyone's reading of it: parts of step k+1
/// are written after the last barrier of step k, which every rank reaches after summing; a
/// summed or parameter share of step k+1 after the first barrier of step k+1, which every rank
/// reaches after copying step k's. Across nodes, or with `WICK_COMBINE=alltoall` (an A/B
/// switch, and how the tests check that both paths give the same bits), the two `MPI_Alltoallv`
/// exchanges of [`ordered_sum`] and the whole optimizer step are used.
#[cfg(feature = "mpi")]
mod node {
    use super::{owned, owned_at, owned_cap, weighted_sum_parts, World};
    use crate::error::Result;
    use crate::optim::Optimizer;
    use crate::params::Params;
    use mpi::ffi;
    use mpi::raw::AsRaw;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use std::sync::Mutex;

    pub(super) struct Window {
        /// The node's ranks (all of the world's), in world-rank order.
        comm: SimpleCommunicator,
        win: ffi::MPI_Win,
        /// (P, M/N) the segments were sized for.
        shape: (usize, usize),
        /// Each rank's segment, in rank order.
        bases: Vec<*mut f32>,
    }
    // SAFETY: only the main thread calls MPI (`Threading::Funneled`), through the mutex below.
    unsafe impl Send for Window {}

    impl Drop for Window {
        fn drop(&mut self) {
            // SAFETY: the window was locked for all ranks at allocation; collective on its comm,
            // which every rank drops at the same point (finalize, or a new shape).
            unsafe {
                ffi::MPI_Win_unlock_all(self.win);
                ffi::MPI_Win_free(&mut self.win);
            }
            let _ = &self.comm;
        }
    }

    /// None: not yet asked. Some(None): the ranks are not all on one node, or the switch is off.
    pub(super) static NODE: Mutex<Option<Option<Window>>> = Mutex::new(None);

    fn fence(w: &Window) {
        // SAFETY: the window is valid and locked; the communicator is the window's.
        unsafe {
            ffi::MPI_Win_sync(w.win);
            ffi::MPI_Barrier(w.comm.as_raw());
            ffi::MPI_Win_sync(w.win);
        }
    }

    fn allocate(world: &World, p: usize, per: usize) -> Option<Window> {
        let comm = SimpleCommunicator::world().split_shared(world.rank() as i32);
        if comm.size() as usize != world.size() {
            return None; // ranks on several nodes: every rank sees the same sizes, so all fall back
        }
        let seg = seg_len(p, per, world.size());
        // The window is a file in a shared-memory file system (OpenMPI: /dev/shm, or the MCA
        // parameter osc_sm_backing_directory), and OpenMPI maps one too large for it with a
        // warning and then fails on first touch: check the room first, on every rank, and let
        // all fall back together if one lacks it (a container's default /dev/shm is 64 MB).
        let need = (seg * 4 * world.size()) as u64;
        let dir = std::env::var("OMPI_MCA_osc_sm_backing_directory").unwrap_or_else(|_| "/dev/shm".to_string());
        let room = free_bytes(&dir).is_none_or(|free| free >= need + need / 8);
        if world.all_reduce_sum_f64(&[f64::from(u8::from(!room))])[0] != 0.0 {
            if world.is_root() {
                eprintln!(
                    "note: {dir} has no room for the {:.0} MB shared-memory window of the gradient combine on some rank; combining through MPI_Alltoallv instead (same bits; give {dir} more space, e.g. docker run --shm-size, for the faster path)",
                    need as f64 / 1e6
                );
            }
            return None;
        }
        let bytes = ffi::MPI_Aint::try_from(seg * 4).expect("a window segment over the address range");
        let mut base: *mut f32 = std::ptr::null_mut();
        let mut win: ffi::MPI_Win = unsafe { ffi::RSMPI_WIN_NULL };
        // SAFETY: collective over `comm`; MPI writes the local base and the window handle. Its
        // errors are returned, not fatal: a node whose shared-memory file system is too small
        // for the window (a container's 64 MB /dev/shm) falls back to the message path.
        let rc = unsafe {
            ffi::MPI_Comm_set_errhandler(comm.as_raw(), ffi::RSMPI_ERRORS_RETURN);
            ffi::MPI_Win_allocate_shared(bytes, 4, ffi::RSMPI_INFO_NULL, comm.as_raw(), (&mut base as *mut *mut f32).cast(), &mut win)
        };
        let ok = rc == ffi::MPI_SUCCESS as i32;
        if world.all_reduce_sum_f64(&[f64::from(u8::from(!ok))])[0] != 0.0 {
            if ok {
                // SAFETY: the window was allocated on this rank; every rank that has one frees it.
                unsafe { ffi::MPI_Win_free(&mut win) };
            }
            if world.is_root() {
                eprintln!(
                    "note: MPI could not allocate a shared-memory window of {:.0} MB per rank for the gradient combine; combining through MPI_Alltoallv instead (free space in /dev/shm, or set WICK_COMBINE=alltoall to skip the attempt)",
                    (seg * 4) as f64 / 1e6
                );
            }
            return None;
        }
        // SAFETY: the window exists on every rank.
        unsafe { ffi::MPI_Win_lock_all(0, win) };
        let bases = (0..world.size())
            .map(|r| {
                let (mut size, mut unit, mut ptr): (ffi::MPI_Aint, i32, *mut f32) = (0, 0, std::ptr::null_mut());
                // SAFETY: r is a rank of the window's communicator.
                unsafe { ffi::MPI_Win_shared_query(win, r as i32, &mut size, &mut unit, (&mut ptr as *mut *mut f32).cast()) };
                assert!(size as usize >= seg * 4, "MPI_Win_shared_query: rank {r}'s segment holds {size} bytes, not {}", seg * 4);
                ptr
            })
            .collect();
        Some(Window { comm, win, shape: (p, per), bases })
    }

    /// Free bytes in the file system holding `dir` (None where that cannot be told).
    fn free_bytes(dir: &str) -> Option<u64> {
        #[cfg(unix)]
        {
            let path = std::ffi::CString::new(dir).ok()?;
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: a NUL-terminated path and a statvfs to fill.
            if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
                return None;
            }
            Some(st.f_bavail as u64 * st.f_frsize as u64)
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            None
        }
    }

    /// Each rank's segment: its micro-batches' gradients (per·p), its summed slice (c), its
    /// updated parameter slice (c).
    fn seg_len(p: usize, per: usize, n: usize) -> usize {
        per * p + 2 * owned_cap(p, n)
    }

    /// Rank r's entries [at, at + len) of its segment.
    ///
    /// # Safety
    /// Within the segment (checked at allocation), and no rank writes them while this lives:
    /// the schedule in the module docs keeps a rank's writes apart from the others' reads.
    unsafe fn view(w: &Window, r: usize, at: usize, len: usize) -> &[f32] {
        unsafe { std::slice::from_raw_parts(w.bases[r].add(at), len) }
    }

    /// This rank's entries [at, at + len) of its own segment, to write.
    ///
    /// # Safety
    /// As [`view`], and no other view of these entries lives meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn view_mut(w: &Window, rank: usize, at: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(w.bases[rank].add(at), len) }
    }

    /// This rank's segment of the node window for gradients of `p` in `per` micro-batches
    /// (allocated, collectively, when the shape is new), or None where the window does not
    /// apply: ranks on several nodes, or `WICK_COMBINE=alltoall`. Every rank gets the same
    /// answer, which depends only on the world's layout, the environment mpirun gives every
    /// rank, and (P, M/N).
    pub(super) fn segment(world: &World, p: usize, per: usize) -> Option<*mut f32> {
        let mut guard = NODE.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = match &*guard {
            None => std::env::var("WICK_COMBINE").map_or(true, |v| v != "alltoall"),
            Some(None) => return None,
            Some(Some(w)) => w.shape != (p, per),
        };
        if fresh {
            *guard = None; // free the old window (collective) before the new one
            *guard = Some(allocate(world, p, per));
        }
        guard.as_ref()?.as_ref().map(|w| w.bases[world.rank()])
    }

    /// The first half of the ordered sum through the node's window: once every rank's
    /// micro-batch gradients are in its segment (written by `Parts`), this rank sums its slice
    /// of all of them in micro-batch order into its segment. [`gather`] or [`update`] must
    /// follow before the next step.
    ///
    /// With `layout` (the parts written as [`super::GradLayout`] says), each entry of the slice is
    /// read where the layout puts it: the same sum of the same values, so the same bits.
    pub(super) fn sum(world: &World, weights: &[f64], p: usize, layout: Option<&super::GradLayout>) {
        let (n, rank) = (world.size(), world.rank());
        let guard = NODE.lock().unwrap_or_else(|e| e.into_inner());
        let Some(Some(w)) = guard.as_ref() else { unreachable!("sum follows segment") };
        let per = w.shape.1;
        fence(w);
        // SAFETY: the summed entries are this rank's own, read by the others only after the
        // fence of `gather`.
        let own = unsafe { view_mut(w, rank, per * p, owned(rank, p, n).iter().map(|r| r.len()).sum()) };
        for (pos, range) in owned_at(rank, p, n) {
            let out = &mut own[pos..pos + range.len()];
            sum_card(w, weights, p, layout, range, out);
        }
    }

    /// Entries `range` of the ordered sum into `out`, read from every rank's parts (written,
    /// and fenced, before; they stay until the fence that ends the step).
    fn sum_card(w: &Window, weights: &[f64], p: usize, layout: Option<&super::GradLayout>, range: std::ops::Range<usize>, out: &mut [f32]) {
        let (n, per) = (w.bases.len(), w.shape.1);
        // SAFETY: `[f32]` viewed as `[MaybeUninit<f32>]`; only f32s are written.
        let out = unsafe { &mut *(out as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) };
        // The parts' entries [at, at + len), micro-batch by micro-batch.
        // SAFETY: inside every segment's parts (P entries each); see above for the timing.
        let parts = |at: usize, len: usize| -> Vec<(f64, &[f32])> { (0..n * per).map(|s| (weights[s], unsafe { view(w, s / per, (s % per) * p + at, len) })).collect() };
        let Some(layout) = layout else {
            return weighted_sum_parts(out, &parts(range.start, range.len()));
        };
        // Parameter by parameter: where one is laid out in its own order, the plain sum of the
        // entries it shares with this range; otherwise the sum read through its scatter.
        let mut at = 0;
        for (len, scatter) in &layout.pieces {
            let (lo, hi) = (at.max(range.start), (at + len).min(range.end));
            if lo < hi {
                let out = &mut out[lo - range.start..hi - range.start];
                match scatter {
                    None => weighted_sum_parts(out, &parts(lo, hi - lo)),
                    Some(sc) => super::weighted_gather_parts(out, &parts(at, *len), sc, lo - at),
                }
            }
            at += len;
        }
        assert_eq!(at, p, "the gradient layout covers {at} entries, not the {p} of the parameters");
    }

    /// The second half, for the whole gradient: once every rank has summed its slice, the N
    /// slices in order (P f32s).
    pub(super) fn gather(world: &World, p: usize) -> Vec<f32> {
        let guard = NODE.lock().unwrap_or_else(|e| e.into_inner());
        let Some(Some(w)) = guard.as_ref() else { unreachable!("gather follows a sum through the window") };
        let (n, per) = (world.size(), w.shape.1);
        fence(w);
        let mut g = vec![0f32; p];
        for r in 0..n {
            for (pos, range) in owned_at(r, p, n) {
                // SAFETY: rank r's summed entries, written before the fence; rewritten only
                // after the next step's first fence, which this rank reaches after copying.
                g[range.clone()].copy_from_slice(unsafe { view(w, r, per * p + pos, range.len()) });
            }
        }
        g
    }

    /// The second half, for a sharded update ([`super::DataParallel::update`]): this rank
    /// updates slice r of the flat parameters with its summed gradient slice
    /// ([`Optimizer::step_flat_range`]), puts the new values in its segment, and once every
    /// rank has, copies the others' slices into its parameters.
    pub(super) fn update(world: &World, opt: &mut Optimizer, params: &Params, lr: f64, sum: &super::Pending) -> Result<()> {
        let guard = NODE.lock().unwrap_or_else(|e| e.into_inner());
        let Some(Some(w)) = guard.as_ref() else { unreachable!("update follows a step through the window") };
        let (n, rank, per) = (world.size(), world.rank(), w.shape.1);
        let p = params.numel();
        let (c, mine, order) = (owned_cap(p, n), owned(rank, p, n), super::sorted_order(params));
        let len = mine.iter().map(|r| r.len()).sum();
        let t = std::time::Instant::now();
        fence(w); // every rank's parts are written
        let mut sum_ns = t.elapsed().as_nanos() as u64;
        // SAFETY: this rank's parameter entries in its own segment, which the others read only
        // after the fence below.
        let theta = unsafe { view_mut(w, rank, per * p + c, len) };
        // Each card summed into the optimizer's buffer just before its update.
        let stepped = opt.step_flat_ranges_with(
            params,
            &order,
            &mine,
            |k, g| {
                let t = std::time::Instant::now();
                sum_card(w, &sum.weights, p, sum.layout.as_ref(), mine[k].clone(), g);
                sum_ns += t.elapsed().as_nanos() as u64;
            },
            theta,
            lr,
        );
        sum.combine_ns.fetch_add(sum_ns, std::sync::atomic::Ordering::Relaxed);
        fence(w); // every rank reaches it, whatever happened to its step
        stepped?;
        for r in (0..n).filter(|&r| r != rank) {
            for (pos, range) in owned_at(r, p, n) {
                // SAFETY: rank r's new parameter entries, written before the fence; rewritten
                // only after the next step's first fence, which this rank reaches after copying.
                let src = unsafe { view(w, r, per * p + c + pos, range.len()) };
                write_flat(params, &order, range, src)?;
            }
        }
        Ok(())
    }

    /// Write `src` into entries `range` of the flat parameters (the parameters in `order`, one
    /// after another).
    fn write_flat(params: &Params, order: &[usize], range: std::ops::Range<usize>, src: &[f32]) -> Result<()> {
        for (i, within, from) in params.flat_pieces(order, range) {
            crate::cpu::with_host_slices_mut(&[params.vars()[i].as_tensor()], "parameter", |s| {
                s[0][within].copy_from_slice(&src[from]);
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// A loss over the whole global batch (SimCLR's NT-Xent, VICReg's batch statistics), taken
/// data-parallel: the outputs of every micro-batch are all-gathered, every rank computes the one
/// loss and its gradient with respect to every output, and each micro-batch backpropagates its
/// own rows of that gradient; see [`DataParallel::step_gathered`].
///
/// ```text
/// Z = [z_0; z_1; …; z_{M−1}]                 z_s = f_θ(rows of micro-batch s), `width` f32s per row
/// ℓ = L(Z),   G = ∂L/∂Z                        the same bits on every rank (same Z, same code)
/// g = Σ_{s=0}^{M−1} J_s(θ)ᵀ G_s              summed left to right in f64, s = micro-batch index
/// ```
///
/// Bytes moved per step and rank: the outputs (b · width f32s, each micro-batch padded to
/// ⌈b/M⌉ rows) and, as for [`DataParallel::step`], every micro-batch's flat gradient.
pub trait GatheredLoss {
    /// What a micro-batch's backward needs from its forward (a graph's output, a tape).
    type State;
    /// f32s per row in the gathered outputs.
    fn width(&self) -> usize;
    /// Rows `[lo, hi)` of the batch forward: `(hi − lo) · width` outputs, row-major.
    fn forward(&mut self, lo: usize, hi: usize) -> Result<(Vec<f32>, Self::State)>;
    /// The loss of all `b` rows' outputs and its gradient with respect to each of them.
    fn loss(&mut self, outputs: &[f32], b: usize) -> Result<(f64, Vec<f32>)>;
    /// The parameter gradients of rows `[lo, hi)` given the loss's gradient `grad` with respect to
    /// their outputs (`(hi − lo) · width` f32s).
    fn backward(&mut self, state: Self::State, lo: usize, hi: usize, grad: &[f32]) -> Result<GradStore>;

    /// A loss that splits by rows (SimCLR's NT-Xent: each anchor's row of the similarity matrix)
    /// says so here with the f32s per batch row of its first phase, for a batch of `b` rows; then
    /// with more than one micro-batch [`GatheredLoss::loss_split`] and
    /// [`GatheredLoss::loss_join`] replace [`GatheredLoss::loss`], and each micro-batch computes
    /// its own rows' share instead of every rank computing the whole. `None` (the default): the
    /// loss is taken whole.
    fn split_width(&self, b: usize) -> Option<usize> {
        let _ = b;
        None
    }

    /// First phase for rows `[lo, hi)`: `(hi − lo) · split_width(b)` f32s, from all `b` rows'
    /// outputs.
    fn loss_split(&mut self, outputs: &[f32], b: usize, lo: usize, hi: usize) -> Result<Vec<f32>> {
        let _ = (outputs, b, lo, hi);
        Err(Error::new("this loss does not split by rows"))
    }

    /// Second phase, once every micro-batch's first phase is gathered (`parts`: `b ·
    /// split_width(b)` f32s in row order): the loss (the same on every rank) and its gradient
    /// with respect to the outputs of rows `[lo, hi)`.
    fn loss_join(&mut self, outputs: &[f32], parts: &[f32], b: usize, lo: usize, hi: usize) -> Result<(f64, Vec<f32>)> {
        let _ = (outputs, parts, b, lo, hi);
        Err(Error::new("this loss does not split by rows"))
    }
}

impl DataParallel {
    /// One global batch of `b` rows under a loss of the whole batch ([`GatheredLoss`]): this
    /// rank forwards its micro-batches, the outputs are all-gathered in micro-batch order, every
    /// rank computes the loss and its gradient, backpropagates its own micro-batches, and the
    /// gradients are all-gathered and summed in micro-batch order (weight 1: each is a part of
    /// the one loss's gradient). One process with `--micro-batches M` runs the same steps one
    /// micro-batch after another, so N ranks give its bits. With M = 1 it is forward, loss,
    /// backward of the whole batch.
    pub fn step_gathered<L: GatheredLoss>(&self, params: &Params, b: usize, job: &mut L) -> Result<Combined> {
        let (m, n) = (self.micro_batches, self.size);
        let per = m / n;
        let width = job.width();
        // Every micro-batch's outputs padded to the largest one's rows, so that ranks send equal lengths.
        let pad = b.div_ceil(m) * width;
        let mine = self.rank * per..(self.rank + 1) * per;
        let mut sent = Vec::with_capacity(per * pad);
        let mut states = Vec::with_capacity(per);
        for s in mine.clone() {
            let (lo, hi) = micro_range(b, m, s);
            let mut out = Vec::new();
            if hi > lo {
                let (o, st) = job.forward(lo, hi)?;
                if o.len() != (hi - lo) * width {
                    return Err(Error::new(format!("micro-batch {s}: {} outputs for {} rows of width {width}", o.len(), hi - lo)));
                }
                out = o;
                states.push(Some(st));
            } else {
                states.push(None);
            }
            out.resize(pad, 0.0);
            sent.extend(out);
        }
        let world = World { rank: self.rank, size: n };
        let padded = world.all_gather_f32(&sent);
        let mut outputs = Vec::with_capacity(b * width);
        for s in 0..m {
            let (lo, hi) = micro_range(b, m, s);
            outputs.extend_from_slice(&padded[s * pad..s * pad + (hi - lo) * width]);
        }
        // The loss's gradient with respect to each local micro-batch's outputs.
        let (loss, douts): (f64, Vec<Vec<f32>>) = match job.split_width(b) {
            Some(w) if m > 1 => {
                // Each micro-batch its rows' first phase; gathered in micro-batch order (padded
                // as the outputs are); then each its rows' gradient.
                let padw = b.div_ceil(m) * w;
                let mut sent = Vec::with_capacity(per * padw);
                for s in mine.clone() {
                    let (lo, hi) = micro_range(b, m, s);
                    let mut part = if hi > lo { job.loss_split(&outputs, b, lo, hi)? } else { Vec::new() };
                    if part.len() != (hi - lo) * w {
                        return Err(Error::new(format!("micro-batch {s}: {} loss entries for {} rows of width {w}", part.len(), hi - lo)));
                    }
                    part.resize(padw, 0.0);
                    sent.extend(part);
                }
                let padded = world.all_gather_f32(&sent);
                drop(sent);
                let mut parts = Vec::with_capacity(b * w);
                for s in 0..m {
                    let (lo, hi) = micro_range(b, m, s);
                    parts.extend_from_slice(&padded[s * padw..s * padw + (hi - lo) * w]);
                }
                drop(padded);
                let mut loss = 0.0;
                let mut douts = Vec::with_capacity(per);
                for s in mine.clone() {
                    let (lo, hi) = micro_range(b, m, s);
                    if hi > lo {
                        let (l, g) = job.loss_join(&outputs, &parts, b, lo, hi)?;
                        loss = l;
                        douts.push(g);
                    } else {
                        douts.push(Vec::new());
                    }
                }
                if douts.iter().all(Vec::is_empty) {
                    // Only empty micro-batches here: the loss from the first row's.
                    loss = job.loss_join(&outputs, &parts, b, 0, 1)?.0;
                }
                (loss, douts)
            }
            _ => {
                let (loss, dout) = job.loss(&outputs, b)?;
                let douts = mine.clone().map(|s| {
                    let (lo, hi) = micro_range(b, m, s);
                    dout[lo * width..hi * width].to_vec()
                }).collect();
                (loss, douts)
            }
        };
        let p = params.numel();
        let mut flat = self.parts(per, p);
        // [w_s, ℓ_s] per local micro-batch as `combine` takes them: weight 1 (each is a part of
        // the one loss's gradient), 0 for an empty one; the loss is the gathered one.
        let mut head = Vec::with_capacity(2 * per);
        for ((s, st), dout) in mine.zip(states).zip(douts) {
            let (lo, hi) = micro_range(b, m, s);
            match st {
                Some(st) => {
                    let grads = job.backward(st, lo, hi, &dout)?;
                    flat.grads(params, &grads)?;
                    head.extend([1.0, 0.0]);
                }
                None => {
                    flat.zeros(p);
                    head.extend([0.0, 0.0]);
                }
            }
        }
        if m == 1 {
            // One micro-batch: its gradient as it is (no f64 round trip).
            let grads = unflatten_grads(params, flat.into_host())?;
            return Ok(Combined::new(loss, grads, crate::signal::interrupted()));
        }
        let combined = self.combine(params, head, flat, None)?;
        Ok(Combined { loss, ..combined })
    }
}

/// The gradients of `grads` as one flat f32 tensor on their device, in sorted-name order.
pub fn flatten_grads_tensor(params: &Params, grads: &GradStore) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(params.len());
    for i in sorted_order(params) {
        let v = &params.vars()[i];
        parts.push(match grads.get(v.as_tensor()) {
            Some(g) => g.flatten_all()?,
            None => Tensor::zeros(v.elem_count(), candle_core::DType::F32, v.device())?,
        });
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// A `GradStore` from a flat tensor in sorted-name order (on the parameters' device).
pub fn unflatten_grads_tensor(params: &Params, flat: &Tensor) -> Result<GradStore> {
    let mut grads = GradStore::default();
    let mut off = 0;
    for i in sorted_order(params) {
        let v = &params.vars()[i];
        let n = v.elem_count();
        grads.insert(v.as_tensor(), flat.narrow(0, off, n)?.reshape(v.dims())?);
        off += n;
    }
    Ok(grads)
}

/// NCCL between GPUs (feature `nccl`): rank 0 creates the unique id, MPI broadcasts its 128
/// bytes, every rank opens a communicator on its device's stream; gradients are all-gathered
/// on the GPUs and summed there in micro-batch order, as the host path does. NCCL refuses two
/// ranks on one GPU. Untested on a GPU so far (docs/distributed.md).
#[cfg(feature = "nccl")]
pub mod nccl {
    use super::*;
    use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id};
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape};
    use std::sync::Arc;

    /// An NCCL communicator over the MPI world's ranks, one CUDA device each.
    #[derive(Clone, Debug)]
    pub struct Nccl(Arc<CommCell>);

    struct CommCell(Comm);

    impl std::fmt::Debug for CommCell {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Comm(rank {} of {})", self.0.rank(), self.0.world_size())
        }
    }

    // SAFETY: wick drives training from one thread; the communicator is only used there
    // (Candle runs a custom op's cuda_fwd on the calling thread), one call at a time.
    unsafe impl Send for CommCell {}
    unsafe impl Sync for CommCell {}

    /// Open the communicator; every rank of the world must call this together.
    pub fn connect(device: &Device) -> Result<Nccl> {
        let Device::Cuda(cuda) = device else {
            return Err(Error::new("NCCL needs a CUDA device: use --device cuda"));
        };
        let w = world();
        let mut bytes = Vec::new();
        if w.is_root() {
            let id = Id::new().map_err(|e| Error::new(format!("creating the NCCL unique id: {e:?}")))?;
            bytes = id.internal().iter().map(|&c| c as u8).collect();
        }
        w.broadcast_bytes(&mut bytes);
        let mut internal = [0 as std::ffi::c_char; 128];
        for (d, b) in internal.iter_mut().zip(&bytes) {
            *d = *b as std::ffi::c_char;
        }
        let comm = Comm::from_rank(cuda.cuda_stream(), w.rank(), w.size(), Id::uninit(internal))
            .map_err(|e| Error::new(format!("opening the NCCL communicator on rank {} of {}: {e:?} (one GPU per rank: check CUDA_VISIBLE_DEVICES or --device cuda:N)", w.rank(), w.size())))?;
        Ok(Nccl(Arc::new(CommCell(comm))))
    }

    impl Nccl {
        /// Every rank's `t` (f32, flattened), concatenated in rank order, on the GPU.
        pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
            Ok(t.flatten_all()?.contiguous()?.apply_op1_no_bwd(&AllGather(self.0.clone()))?)
        }

        /// [`DataParallel::step`] with the gradients gathered and summed on the GPU.
        pub(super) fn step(&self, dp: &DataParallel, params: &Params, b: usize, mut shard: impl FnMut(usize, usize) -> Result<(f64, GradStore)>) -> Result<Combined> {
            let (m, n) = (dp.micro_batches, dp.size);
            let per = m / n;
            let p = params.numel();
            let dev = params.vars()[0].device().clone();
            let mut head = Vec::with_capacity(2 * per + 1);
            let mut local = Vec::with_capacity(per);
            for s in dp.rank * per..(dp.rank + 1) * per {
                let (lo, hi) = micro_range(b, m, s);
                if hi > lo {
                    let (loss, grads) = shard(lo, hi)?;
                    head.extend([(hi - lo) as f64 / b as f64, loss]);
                    local.push(flatten_grads_tensor(params, &grads)?);
                } else {
                    head.extend([0.0, 0.0]);
                    local.push(Tensor::zeros(p, DType::F32, &dev)?);
                }
            }
            head.push(crate::signal::interrupted() as u8 as f64);
            let heads = world().all_gather_f64(&head);
            let all = self.all_gather(&Tensor::cat(&local, 0)?)?;
            let mut acc = Tensor::zeros(p, DType::F64, &dev)?;
            let (mut loss, mut interrupted) = (0.0f64, false);
            for r in 0..n {
                let h = &heads[r * (2 * per + 1)..(r + 1) * (2 * per + 1)];
                interrupted |= h[2 * per] != 0.0;
                for k in 0..per {
                    let (w, l) = (h[2 * k], h[2 * k + 1]);
                    if w == 0.0 {
                        continue;
                    }
                    loss += w * l;
                    let g = all.narrow(0, (r * per + k) * p, p)?.to_dtype(DType::F64)?;
                    acc = (acc + (g * w)?)?;
                }
            }
            let g = acc.to_dtype(DType::F32)?;
            Ok(Combined::new(loss, unflatten_grads_tensor(params, &g)?, interrupted))
        }
    }

    struct AllGather(Arc<CommCell>);

    impl CustomOp1 for AllGather {
        fn name(&self) -> &'static str {
            "wick-nccl-all-gather"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("the NCCL all-gather needs a CUDA tensor")
        }

        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let comm = &self.0 .0;
            let Some((lo, hi)) = l.contiguous_offsets() else {
                candle_core::bail!("the NCCL all-gather needs a contiguous tensor")
            };
            let src = s.as_cuda_slice::<f32>()?.slice(lo..hi);
            let n = (hi - lo) * comm.world_size();
            // SAFETY: the all-gather writes every element before anything reads it.
            let mut dst = unsafe { s.device.alloc::<f32>(n) }?;
            comm.all_gather(&src, &mut dst).map_err(|e| candle_core::Error::Msg(format!("NCCL all-gather: {e:?}")))?;
            Ok((CudaStorage::wrap_cuda_slice(dst, s.device.clone()), Shape::from(n)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::Device;

    /// The sum read through a scatter equals unlaying every part and summing: every entry, any
    /// start and length (runs shorter and longer than the 16-wide path, rows cut anywhere),
    /// one to three parts, a zero weight skipped.
    #[test]
    fn the_sum_through_a_scatter_is_the_sum_of_the_unlaid_parts() {
        let mut rng = Rng::stream(7, "scatter-test");
        let (rows, cols) = (37usize, 53usize);
        let perm = |n: usize, rng: &mut Rng| {
            let mut p: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                p.swap(i, rng.below(i as u64 + 1) as usize);
            }
            p
        };
        let rp = perm(rows, &mut rng);
        let sc = Scatter {
            cols,
            row_at: rp.iter().map(|&r| r * cols as u32).collect(),
            from: (0..rows).map(|_| rng.below(cols as u64 + 1) as u32).collect(),
            col_at: perm(cols, &mut rng),
        };
        let n = rows * cols;
        let layout = GradLayout { pieces: vec![(n, Some(sc.clone()))] };
        let parts: Vec<Vec<f32>> = (0..3).map(|_| (0..n).map(|_| (rng.uniform() as f32 - 0.5) * 1e-3).collect()).collect();
        for weights in [vec![1.0], vec![0.25, 0.75], vec![0.5, 0.0, 0.5], vec![0.2, 0.3, 0.5]] {
            let k = weights.len();
            let unlaid: Vec<Vec<f32>> = parts[..k].iter().map(|p| layout.unlay(p)).collect();
            for (a, len) in [(0, n), (5, 11), (cols - 3, 40), (2 * cols, cols), (100, 700), (n - 17, 17)] {
                let laid: Vec<(f64, &[f32])> = weights.iter().zip(&parts).map(|(&w, p)| (w, p.as_slice())).collect();
                let mut got = vec![std::mem::MaybeUninit::new(f32::NAN); len];
                weighted_gather_parts(&mut got, &laid, &sc, a);
                let flat: Vec<(f64, &[f32])> = weights.iter().zip(&unlaid).map(|(&w, p)| (w, &p[a..a + len])).collect();
                let mut want = vec![std::mem::MaybeUninit::new(f32::NAN); len];
                weighted_sum_parts(&mut want, &flat);
                let bits = |v: &[std::mem::MaybeUninit<f32>]| v.iter().map(|x| unsafe { x.assume_init() }.to_bits()).collect::<Vec<u32>>();
                assert_eq!(bits(&got), bits(&want), "weights {weights:?}, entries {a}..{}", a + len);
            }
        }
    }

    /// The dealt cards give every flat entry to exactly one rank, several cards per rank once P
    /// allows, and rank 0 the most (the segments' room).
    #[test]
    fn dealt_cards_cover_every_entry_once() {
        for p in [0usize, 1, 255, 1000, 4097, 70_001, 785_284] {
            for n in 1..=4 {
                let mut seen = vec![0u8; p];
                for r in 0..n {
                    let mine = super::owned(r, p, n);
                    assert!(mine.windows(2).all(|w| w[0].end <= w[1].start), "in order");
                    assert!(mine.iter().map(|x| x.len()).sum::<usize>() <= super::owned_cap(p, n));
                    if p >= 256 * 2 * n * 4 {
                        assert!(mine.len() >= 2, "p {p} n {n}: {} cards for rank {r}", mine.len());
                    }
                    for x in mine {
                        x.for_each(|i| seen[i] += 1);
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "p {p} n {n}");
            }
        }
    }

    #[test]
    fn micro_ranges_tile_the_batch_in_order() {
        for (b, m) in [(100, 4), (7, 3), (2, 5), (1, 1)] {
            let mut next = 0;
            for s in 0..m {
                let (lo, hi) = micro_range(b, m, s);
                assert_eq!(lo, next);
                assert!(hi >= lo && hi - lo <= b / m + 1);
                next = hi;
            }
            assert_eq!(next, b);
        }
    }

    #[test]
    fn flat_gradients_follow_sorted_names_and_round_trip() {
        let dev = Device::Cpu;
        let mut p = Params::new();
        let mut r = Rng::stream(0, "init");
        let zb = p.uniform("z.bias", &[2], 1.0, &mut r, &dev).unwrap();
        let aw = p.uniform("a.weight", &[3], 1.0, &mut r, &dev).unwrap();
        let loss = (zb.sum_all().unwrap() * 2.0).unwrap().add(&(aw.sum_all().unwrap() * 3.0).unwrap()).unwrap();
        let g = loss.backward().unwrap();
        let flat = flatten_grads(&p, &g).unwrap();
        assert_eq!(flat, vec![3.0, 3.0, 3.0, 2.0, 2.0], "a.weight first, then z.bias");
        let back = unflatten_grads(&p, flat.clone()).unwrap();
        assert_eq!(back.get(&zb).unwrap().to_vec1::<f32>().unwrap(), vec![2.0, 2.0]);
    }

    #[test]
    fn refuses_micro_batches_the_ranks_or_batch_cannot_share() {
        let w3 = World { rank: 0, size: 3 };
        let e = DataParallel::new(4, 100, &w3).unwrap_err().to_string();
        assert!(e.contains("4 micro-batches") && e.contains("1, 2, 4"), "{e}");
        let e = DataParallel::new(3, 100, &w3).unwrap_err().to_string();
        assert!(e.contains("--batch 100 is not divisible into 3"), "{e}");
        assert!(DataParallel::new(3, 99, &w3).is_ok());
    }

    /// The weighted ordered sum, with one short and one empty micro-batch, against an f64 loop.
    #[test]
    fn blocked_weighted_sum_is_the_left_to_right_f64_sum() {
        // Lengths around the block size, an offset, and a zero weight (an empty micro-batch).
        let mut r = Rng::stream(7, "test");
        for len in [1usize, 511, 512, 513, 1500] {
            let (m, stride, offset) = (4, len + 9, 5);
            let parts: Vec<f32> = (0..m * stride).map(|_| (r.normal() * 1e3) as f32).collect();
            let weights = [0.25, 0.0, 0.5, 0.25];
            let mut out = vec![f32::NAN; len];
            weighted_sum(&mut out, &weights, &parts[offset..], stride);
            for i in 0..len {
                let mut a = 0.0f64;
                for (s, &w) in weights.iter().enumerate() {
                    if w != 0.0 {
                        a += w * parts[s * stride + offset + i] as f64;
                    }
                }
                assert_eq!(out[i].to_bits(), (a as f32).to_bits(), "len {len} entry {i}");
            }
        }
    }

    #[test]
    fn accumulation_is_the_weighted_ordered_sum() {
        let dev = Device::Cpu;
        let mut p = Params::new();
        let w = p.uniform("w", &[4], 1.0, &mut Rng::stream(1, "init"), &dev).unwrap();
        let x: Vec<f32> = (0..5 * 4).map(|i| (i as f32 * 0.37).sin()).collect();
        let xt = Tensor::from_vec(x.clone(), (5, 4), &dev).unwrap();
        let dp = DataParallel::new(6, 6, &World { rank: 0, size: 1 }).unwrap();
        let mut seen = Vec::new();
        // b = 5 rows in 6 micro-batches: sizes 0,1,1,1,1,1 — one empty.
        let c = dp
            .step(&p, 5, |lo, hi| {
                seen.push((lo, hi));
                let l = xt.narrow(0, lo, hi - lo)?.broadcast_mul(&w.unsqueeze(0)?)?.sqr()?.sum(1)?.mean_all()?;
                Ok((l.to_scalar::<f32>()? as f64, l.backward()?))
            })
            .unwrap();
        assert_eq!(seen, vec![(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]);
        let wv = w.to_vec1::<f32>().unwrap();
        // d/dw_j of mean_i (Σ_j (x_ij w_j)²) = mean_i 2 x_ij² w_j, each micro-batch's gradient in f32.
        let mut want = [0.0f64; 4];
        for i in 0..5 {
            for j in 0..4 {
                want[j] += 0.2 * (2.0 * x[i * 4 + j] * x[i * 4 + j] * wv[j]) as f64;
            }
        }
        let got = c.whole().get(&w).unwrap().to_vec1::<f32>().unwrap();
        for j in 0..4 {
            assert!((got[j] as f64 - want[j]).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        assert!(!c.interrupted);
    }

    /// A loss that couples all rows (the variance of z = x·w over the batch), through the
    /// gathered step in 1, 2, 3 and 6 micro-batches (5 rows: uneven, one empty), against
    /// Candle's backward of the whole batch.
    #[test]
    fn gathered_step_gives_the_whole_batch_gradient() {
        struct Variance<'a> {
            x: &'a Tensor,
            w: &'a candle_core::Var,
        }
        impl GatheredLoss for Variance<'_> {
            type State = Tensor;
            fn width(&self) -> usize {
                1
            }
            fn forward(&mut self, lo: usize, hi: usize) -> Result<(Vec<f32>, Tensor)> {
                let z = self.x.narrow(0, lo, hi - lo)?.matmul(&self.w.unsqueeze(1)?)?.squeeze(1)?;
                Ok((z.to_vec1::<f32>()?, z))
            }
            fn loss(&mut self, outputs: &[f32], b: usize) -> Result<(f64, Vec<f32>)> {
                let z = candle_core::Var::from_slice(outputs, b, &Device::Cpu)?;
                let l = z.broadcast_sub(&z.mean_all()?)?.sqr()?.mean_all()?;
                let g = l.backward()?.get(&z).expect("a gradient").to_vec1::<f32>()?;
                Ok((l.to_scalar::<f32>()? as f64, g))
            }
            fn backward(&mut self, z: Tensor, _lo: usize, _hi: usize, grad: &[f32]) -> Result<GradStore> {
                Ok((z * Tensor::from_slice(grad, grad.len(), &Device::Cpu)?)?.sum_all()?.backward()?)
            }
        }
        let dev = Device::Cpu;
        let mut p = Params::new();
        let w = p.uniform("w", &[3], 1.0, &mut Rng::stream(3, "init"), &dev).unwrap();
        let x = Tensor::from_vec((0..5 * 3).map(|i| (i as f32 * 0.71).cos()).collect::<Vec<_>>(), (5, 3), &dev).unwrap();
        let z = x.matmul(&w.unsqueeze(1).unwrap()).unwrap().squeeze(1).unwrap();
        let whole = z.broadcast_sub(&z.mean_all().unwrap()).unwrap().sqr().unwrap().mean_all().unwrap();
        let want = whole.backward().unwrap().get(&w).unwrap().to_vec1::<f32>().unwrap();
        let wl = whole.to_scalar::<f32>().unwrap() as f64;
        let wv = candle_core::Var::from_tensor(&w).unwrap();
        assert!(want.iter().any(|g| g.abs() > 1e-3), "{want:?}");
        for m in [1, 2, 3, 6] {
            let dp = DataParallel::new(m, 6, world()).unwrap();
            let c = dp.step_gathered(&p, 5, &mut Variance { x: &x, w: &wv }).unwrap();
            assert!((c.loss - wl).abs() < 1e-6, "M={m}: {} vs {wl}", c.loss);
            let got = c.whole().get(&w).unwrap().to_vec1::<f32>().unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "M={m}: {got:?} vs {want:?}");
            }
        }
    }

    /// Caller-cut shares with their own weights: the weighted sum in share order; on one rank
    /// the ring combine (a local f64 sum rounded once) gives the same bits as the ordered one.
    #[test]
    fn weighted_shares_sum_in_order_and_ring_on_one_rank_is_ordered() {
        let dev = Device::Cpu;
        let mut p = Params::new();
        let w = p.uniform("w", &[3], 1.0, &mut Rng::stream(4, "init"), &dev).unwrap();
        let weights = [0.5, 0.125, 0.375];
        let run = |how: Allreduce| {
            let dp = DataParallel::new(3, 3, &World { rank: 0, size: 1 }).unwrap().with_allreduce(how);
            let mut seen = Vec::new();
            let c = dp
                .step_weighted(&p, |s| {
                    seen.push(s);
                    let l = (w.sqr()?.sum_all()? * (s as f64 + 1.0))?;
                    Ok((weights[s], l.to_scalar::<f32>()? as f64, l.backward()?))
                })
                .unwrap();
            assert_eq!(seen, vec![0, 1, 2]);
            (c.loss, c.whole().get(&w).unwrap().to_vec1::<f32>().unwrap())
        };
        let (loss, g) = run(Allreduce::Ordered);
        let wv: Vec<f32> = w.to_vec1().unwrap();
        let sq: f64 = wv.iter().map(|&x| (x * x) as f64).sum();
        assert!((loss - sq * (0.5 + 0.125 * 2.0 + 0.375 * 3.0)).abs() < 1e-5, "{loss}");
        for (j, &x) in wv.iter().enumerate() {
            let want: f64 = (0..3).map(|s| weights[s] * (2.0 * x * (s as f32 + 1.0)) as f64).sum();
            assert_eq!(g[j], want as f32, "element {j}");
        }
        assert_eq!(run(Allreduce::Ring), (loss, g));
    }

    #[test]
    fn one_micro_batch_is_the_plain_step() {
        let dev = Device::Cpu;
        let mut p = Params::new();
        let w = p.uniform("w", &[3], 1.0, &mut Rng::stream(2, "init"), &dev).unwrap();
        let dp = DataParallel::new(1, 7, world()).unwrap();
        let c = dp.step(&p, 7, |lo, hi| {
            assert_eq!((lo, hi), (0, 7));
            let l = w.sqr()?.sum_all()?;
            Ok((1.5, l.backward()?))
        });
        let c = c.unwrap();
        assert_eq!(c.loss, 1.5);
        let g: Vec<f32> = c.whole().get(&w).unwrap().to_vec1().unwrap();
        let wv: Vec<f32> = w.to_vec1().unwrap();
        assert_eq!(g, wv.iter().map(|x| 2.0 * x).collect::<Vec<_>>());
    }

    #[test]
    fn checksums_see_every_bit() {
        let dev = Device::Cpu;
        let mk = |seed| {
            let mut p = Params::new();
            p.uniform("w", &[3, 2], 1.0, &mut Rng::stream(seed, "init"), &dev).unwrap();
            p
        };
        assert_eq!(params_checksum(&mk(1)).unwrap(), params_checksum(&mk(1)).unwrap());
        assert_ne!(params_checksum(&mk(1)).unwrap(), params_checksum(&mk(2)).unwrap());
    }
}
