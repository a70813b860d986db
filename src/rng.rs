//! A CPU random number generator that reproduces PyTorch's `torch.Generator("cpu")` and
//! `torch.randn(shape, generator=g, dtype=torch.float32)` bit for bit, so that
//! `--seed N` gives the same initial latents (and the same per-step noise of ancestral
//! samplers) as diffusers with `generator=torch.Generator("cpu").manual_seed(N)`.
//!
//! What torch does (ATen `CPUGeneratorImpl`, `DistributionsHelper.h`,
//! `native/cpu/DistributionTemplates.h`, `native/cpu/avx_mathfun.h`):
//!
//! - The engine is the standard 32-bit Mersenne Twister (mt19937). `manual_seed(s)` keeps
//!   the full 64-bit seed for `initial_seed()` but seeds the state from its low 32 bits
//!   only, so seeds `5` and `2**32 + 5` give the same numbers. `random64()` is two draws,
//!   the first one the high word.
//! - `randn` of `n >= 16` contiguous float32 values: fill all `n` slots with 24-bit
//!   uniforms `(r & 0xFFFFFF) * 2^-24` from 32-bit draws, then Box-Muller in place on
//!   blocks of 16 (`u1 = 1 - d[j]`, `u2 = d[j + 8]`, `d[j] = r cos θ`, `d[j + 8] = r sin θ`,
//!   `r = sqrt(-2 ln u1)`, `θ = 2π u2`). When `n % 16 != 0` the last 16 slots are refilled
//!   from 16 fresh uniforms and transformed again.
//! - `randn` of fewer than 16 values: one `at::normal_distribution<double>` sample per value
//!   (two 53-bit uniforms from `random64()`, `r = sqrt(-2 log1p(-u2))`, `θ = 2π u1`,
//!   returns `r cos θ`) cast to f32. The matching `r sin θ` is cached *in the generator*
//!   and returned by the next scalar-path sample, even one in a later `randn` call; the
//!   block path neither reads nor clears that cache, and `manual_seed` clears it.
//!
//! Which Box-Muller arithmetic torch uses for the blocks depends on the CPU torch runs on:
//!
//! - [`NormalPath::Avx2`] (the default here): x86-64 with AVX2 (also AVX-512 machines: torch
//!   registers no AVX-512 kernel for `normal`, so they run the AVX2 one). Torch evaluates log, sin
//!   and cos with the cephes-style single-precision polynomials of `avx_mathfun.h`, and the
//!   released binaries are built by GCC with FMA contraction on, so several `a * b + c`
//!   steps are fused. This module repeats those polynomials lane by lane with the fusions
//!   read from the disassembly of torch 2.x's `libtorch_cpu.so` (`f32::mul_add` exactly
//!   where the binary has `vfmadd`/`vfnmadd`/`vfmsub`). Checked bit for bit against torch
//!   on an AVX2 machine by `tests/rng.rs`; the same polynomials without the fusions differ
//!   from torch in about 1% of the values (up to 2 ulp).
//! - [`NormalPath::Scalar`]: torch's generic build (`ATEN_CPU_CAPABILITY=default`, and CPUs
//!   without AVX2 such as Apple silicon or other ARM machines): `logf`, `sinf`, `cosf` of
//!   the platform's C library, with `θ` computed in double. Those functions are not
//!   correctly rounded everywhere, so the last bit of some values differs between platforms
//!   (Apple's libm versus glibc) and from the AVX2 path: torch itself gives slightly
//!   different noise on such machines for the same seed. Measured on a 1x4x96x96 latent
//!   (seed 0): 39% of the values differ from the AVX2 path, by at most 1.8e-6 in absolute
//!   value; images are visually identical.
//!
//! The engine, the uniform draws and the generator state are the same on every platform;
//! the path below 16 values uses double-precision libm `log1p`, `sin`, `cos`, whose rare
//! last-bit differences between C libraries almost never survive the cast to f32.

/// The Mersenne Twister state size and shift (MT19937).
const MT_N: usize = 624;
const MT_M: usize = 397;
const MT_MATRIX_A: u32 = 0x9908_b0df;
const MT_UPPER: u32 = 0x8000_0000;
const MT_LOWER: u32 = 0x7fff_ffff;

/// The 32-bit Mersenne Twister, seeded as `std::mt19937(seed)` / torch's `mt19937(seed)`.
#[derive(Clone)]
struct Mt19937 {
    state: [u32; MT_N],
    /// Index of the next word to temper; `MT_N` means the state must be regenerated first.
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; MT_N];
        state[0] = seed;
        for j in 1..MT_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Mt19937 { state, index: MT_N }
    }

    fn regenerate(&mut self) {
        for k in 0..MT_N {
            let y = (self.state[k] & MT_UPPER) | (self.state[(k + 1) % MT_N] & MT_LOWER);
            let mag = if y & 1 == 1 { MT_MATRIX_A } else { 0 };
            self.state[k] = self.state[(k + MT_M) % MT_N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= MT_N {
            self.regenerate();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// Which arithmetic the Box-Muller blocks (tensors of 16 values or more) use; see the
/// module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormalPath {
    /// Torch on x86-64 with AVX2: `avx_mathfun.h` polynomials with GCC's FMA fusions.
    #[default]
    Avx2,
    /// Torch's generic build: libm `logf` / `sinf` / `cosf` per value.
    Scalar,
}

/// `torch.Generator("cpu")`: an mt19937 engine plus torch's cached second normal sample.
#[derive(Clone)]
pub struct TorchGenerator {
    seed: u64,
    engine: Mt19937,
    /// `next_double_normal_sample`: the `r sin θ` half of the last scalar-path pair.
    next_double_normal: Option<f64>,
    path: NormalPath,
}

impl std::fmt::Debug for TorchGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchGenerator")
            .field("seed", &self.seed)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TorchGenerator {
    /// `torch.Generator("cpu").manual_seed(seed)`. Torch also accepts negative Python ints
    /// down to `-2**63`, taken as their two's complement: pass `seed as u64`.
    pub fn new(seed: u64) -> Self {
        Self::with_path(seed, NormalPath::default())
    }

    /// Like [`TorchGenerator::new`], choosing the Box-Muller arithmetic to reproduce.
    pub fn with_path(seed: u64, path: NormalPath) -> Self {
        TorchGenerator {
            seed,
            engine: Mt19937::new(seed as u32),
            next_double_normal: None,
            path,
        }
    }

    /// `g.manual_seed(seed)`: restarts the engine and forgets the cached normal sample.
    pub fn manual_seed(&mut self, seed: u64) -> &mut Self {
        *self = Self::with_path(seed, self.path);
        self
    }

    /// `g.initial_seed()`: the full 64-bit seed last given.
    pub fn initial_seed(&self) -> u64 {
        self.seed
    }

    /// The Box-Muller arithmetic this generator reproduces.
    pub fn path(&self) -> NormalPath {
        self.path
    }

    /// `CPUGeneratorImpl::random()`: one 32-bit engine output.
    pub fn random(&mut self) -> u32 {
        self.engine.next_u32()
    }

    /// `CPUGeneratorImpl::random64()`: two draws, the first one the high word.
    pub fn random64(&mut self) -> u64 {
        let hi = self.engine.next_u32() as u64;
        let lo = self.engine.next_u32() as u64;
        (hi << 32) | lo
    }

    /// `at::uniform_real_distribution<float>(0, 1)`: 24 random bits in [0, 1).
    pub fn uniform_f32(&mut self) -> f32 {
        (self.random() & 0x00ff_ffff) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// `at::uniform_real_distribution<double>(0, 1)`: 53 random bits in [0, 1).
    pub fn uniform_f64(&mut self) -> f64 {
        (self.random64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `at::normal_distribution<double>(0, 1)`: a standard normal sample, using and
    /// refilling the generator's cached second sample as torch does.
    pub fn normal_f64(&mut self) -> f64 {
        if let Some(cached) = self.next_double_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(shape, generator=self, dtype=torch.float32)`, row-major. A shape whose
    /// element count overflows `usize` is an error.
    pub fn randn(&mut self, shape: &[usize]) -> crate::Result<Vec<f32>> {
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| crate::Error::shape("randn", format!("{shape:?} overflows usize")))?;
        let mut out = vec![0.0f32; numel];
        self.fill_randn(&mut out);
        Ok(out)
    }

    /// Fills `out` as `torch.randn` fills a contiguous float32 tensor of `out.len()` values.
    pub fn fill_randn(&mut self, out: &mut [f32]) {
        let n = out.len();
        if n < 16 {
            for v in out.iter_mut() {
                *v = self.normal_f64() as f32;
            }
            return;
        }
        for v in out.iter_mut() {
            *v = self.uniform_f32();
        }
        let path = self.path;
        for block in out.chunks_exact_mut(16) {
            box_muller_16(path, block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut out[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            box_muller_16(path, tail);
        }
    }
}

/// diffusers' `randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(seed),
/// dtype=torch.float32)` with one generator: the whole batch drawn as one tensor.
pub fn randn_like_diffusers(seed: u64, shape: &[usize]) -> crate::Result<Vec<f32>> {
    TorchGenerator::new(seed).randn(shape)
}

/// Box-Muller on 16 uniforms in place: slots 0..8 become `r cos θ`, 8..16 `r sin θ`.
fn box_muller_16(path: NormalPath, d: &mut [f32]) {
    for j in 0..8 {
        let (n1, n2) = match path {
            NormalPath::Avx2 => avx2::pair(d[j], d[j + 8]),
            NormalPath::Scalar => scalar_pair(d[j], d[j + 8]),
        };
        // torch stores `fma(n, std, mean)` with std = 1 and mean = 0: n + 0 (turns -0 into +0).
        d[j] = n1 + 0.0;
        d[j + 8] = n2 + 0.0;
    }
}

/// Torch's generic `NormalFill16`: f32 libm calls, θ computed in double.
fn scalar_pair(a: f32, b: f32) -> (f32, f32) {
    let u1 = 1.0 - a;
    let radius = (-2.0 * u1.ln()).sqrt();
    let theta = (2.0 * std::f64::consts::PI * b as f64) as f32;
    (radius * theta.cos(), radius * theta.sin())
}

/// One lane of torch's AVX2 `NormalFill16` (`log256_ps`, `sincos256_ps`), operation by
/// operation. The constants keep the C source's digits: like C, each literal is read as an
/// f64 and then rounded to f32, which is what `_PS256_CONST` stores.
#[allow(clippy::excessive_precision, clippy::approx_constant)]
mod avx2 {
    const SQRTHF: f32 = 0.707106781186547524_f64 as f32;
    const LOG_P: [f32; 9] = [
        7.0376836292E-2_f64 as f32,
        -1.1514610310E-1_f64 as f32,
        1.1676998740E-1_f64 as f32,
        -1.2420140846E-1_f64 as f32,
        1.4249322787E-1_f64 as f32,
        -1.6668057665E-1_f64 as f32,
        2.0000714765E-1_f64 as f32,
        -2.4999993993E-1_f64 as f32,
        3.3333331174E-1_f64 as f32,
    ];
    const LOG_Q1: f32 = -2.12194440e-4_f64 as f32;
    const LOG_Q2: f32 = 0.693359375_f64 as f32;
    const MINUS_DP1: f32 = -0.78515625_f64 as f32;
    const MINUS_DP2: f32 = -2.4187564849853515625e-4_f64 as f32;
    const MINUS_DP3: f32 = -3.77489497744594108e-8_f64 as f32;
    const SINCOF: [f32; 3] = [
        -1.9515295891E-4_f64 as f32,
        8.3321608736E-3_f64 as f32,
        -1.6666654611E-1_f64 as f32,
    ];
    const COSCOF: [f32; 3] = [
        2.443315711809948E-005_f64 as f32,
        -1.388731625493765E-003_f64 as f32,
        4.166664568298827E-002_f64 as f32,
    ];
    const FOPI: f32 = 1.27323954473516_f64 as f32;
    const TWO_PI: f32 = (2.0 * std::f64::consts::PI) as f32;
    const SIGN: u32 = 0x8000_0000;

    /// Uniforms `a` (cos half) and `b` (sin half) to the two normals `r cos θ`, `r sin θ`.
    pub(super) fn pair(a: f32, b: f32) -> (f32, f32) {
        let u1 = 1.0 - a;
        let radius = (log(u1) * -2.0).sqrt();
        let theta = b * TWO_PI;
        let (s, c) = sincos(theta);
        (radius * c, radius * s)
    }

    /// `log256_ps` for one lane; `x` is in (0, 1] here, so the invalid-input mask is unset.
    fn log(x: f32) -> f32 {
        let invalid = x <= 0.0;
        let x = x.max(f32::from_bits(0x0080_0000));
        let bits = x.to_bits();
        let exponent = (bits >> 23) as i32 - 0x7f;
        let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
        let mut e = exponent as f32 + 1.0;
        let below = x < SQRTHF;
        let tmp = if below { x } else { 0.0 };
        x -= 1.0;
        e -= if below { 1.0 } else { 0.0 };
        x += tmp;
        let z = x * x;
        // GCC fused the Horner steps and three of the final updates (see module docs).
        let mut y = LOG_P[0];
        for &p in &LOG_P[1..] {
            y = y.mul_add(x, p);
        }
        y *= x;
        y = y.mul_add(z, e * LOG_Q1);
        y = (-z).mul_add(0.5, y);
        x += y;
        x = e.mul_add(LOG_Q2, x);
        if invalid { f32::NAN } else { x }
    }

    /// `sincos256_ps` for one lane: (sin, cos).
    fn sincos(x: f32) -> (f32, f32) {
        let sign_in = x.to_bits() & SIGN;
        let mut x = x.abs();
        let j = (((x * FOPI) as i32).wrapping_add(1)) & !1;
        let y = j as f32;
        let swap_sin = ((j & 4) as u32) << 29;
        let use_sin_poly = (j & 2) == 0;
        x = y.mul_add(MINUS_DP1, x);
        x = y.mul_add(MINUS_DP2, x);
        x = y.mul_add(MINUS_DP3, x);
        let sign_cos = ((!(j.wrapping_sub(2)) & 4) as u32) << 29;
        let sign_sin = sign_in ^ swap_sin;

        let z = x * x;
        let mut yc = COSCOF[0].mul_add(z, COSCOF[1]);
        yc = yc.mul_add(z, COSCOF[2]);
        yc *= z;
        yc = yc.mul_add(z, -(z * 0.5));
        yc += 1.0;

        let mut ys = SINCOF[0].mul_add(z, SINCOF[1]);
        ys = ys.mul_add(z, SINCOF[2]);
        ys *= z;
        ys = ys.mul_add(x, x);

        // Blend exactly as the vector code does (the adds of +0 can matter for -0).
        let ysin2 = if use_sin_poly { ys } else { 0.0 };
        let ysin1 = if use_sin_poly { 0.0 } else { yc };
        let ys_rest = ys - ysin2;
        let yc_rest = yc - ysin1;
        let sin = ysin1 + ysin2;
        let cos = yc_rest + ys_rest;
        (
            f32::from_bits(sin.to_bits() ^ sign_sin),
            f32::from_bits(cos.to_bits() ^ sign_cos),
        )
    }
}
