//! Our own tract operators, patched into tract's plans where tract 0.23.9 is slow on
//! MobileNetV3 (issue 8, `docs/performance/inference.md`); tract stays the engine and runs
//! everything else.
//!
//! - [`depthwise`]: f32 depthwise convolution with explicit SIMD (AVX-512F, AVX2 + FMA, NEON,
//!   portable), in place of tract's `Conv` before `into_optimized()`;
//!   `PLEURA_TRACT_DEPTHWISE=tract` keeps tract's.
//! - [`channel`]: the squeeze-excitation scale and global-pool sum in channel-last plans, in
//!   the optimised model; `PLEURA_TRACT_CHANNEL_OPS=tract` keeps tract's.

pub(crate) mod channel;
pub(crate) mod depthwise;
