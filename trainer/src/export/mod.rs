//! Export of trained models: ONNX graphs ([`onnx`]), their int8 form ([`quantize`]), scoring of
//! exported heads through tract ([`tract_eval`]) and model packs ([`pack`]).

pub mod onnx;
pub mod pack;
pub mod quantize;
pub mod tract_eval;
