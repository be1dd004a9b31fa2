//! Export of trained models: ONNX graphs ([`onnx`]) and model packs ([`pack`]).

pub mod onnx;
pub mod pack;
