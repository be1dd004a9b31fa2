//! `pleura info`: a pack's manifest and shapes, every checksum verified.

use std::io::{self, Write};
use std::path::Path;

use anyhow::Result;

use pleura::pack::{fmt_shape, Pack, Quantization};

/// Prints the pack in `dir`.
pub fn info(dir: &Path) -> Result<()> {
    let pack = Pack::load(dir)?;
    let networks = pack.load_networks()?;
    let m = &pack.manifest;
    let mut out = io::stdout().lock();
    writeln!(out, "pack        {} (format {})", m.name, m.format_version)?;
    writeln!(out, "            {}", m.description)?;
    writeln!(
        out,
        "input       {}x{}x{} (C x H x W), pixel/255 normalised with mean {} std {}",
        m.input.channels, m.input.height, m.input.width, m.input.mean, m.input.std
    )?;
    let b = &pack.backbone;
    writeln!(
        out,
        "backbone    {} {} -> {}  {} features, {} parameters, {} KiB  sha256 ok",
        m.backbone.architecture,
        fmt_shape(&b.input_shape),
        fmt_shape(&b.output_shape),
        m.backbone.feature_dim,
        m.backbone.parameters,
        b.bytes / 1024
    )?;
    for (((task, head), int8), net) in m
        .tasks
        .iter()
        .zip(&pack.heads)
        .zip(&pack.int8_heads)
        .zip(&networks)
    {
        let gate = task.gate.as_ref().map_or("every frame".to_string(), |g| {
            format!("when {} = {}", g.task, g.class)
        });
        writeln!(
            out,
            "task        {:<9} {} vs {}, {gate}",
            task.name, task.classes[0], task.classes[1]
        )?;
        // The f32 head, then the int8 head when the pack has one; the manifest names the default.
        let forms = match int8 {
            Some(int8) => vec![
                ("f32", head, task.head.quantization == Quantization::F32),
                ("int8", int8, task.head.quantization != Quantization::F32),
            ],
            None => vec![(task.head.quantization.as_str(), head, true)],
        };
        for (form, model, default) in forms {
            writeln!(
                out,
                "  head      {:?} {form} {} -> {}, {} bytes  sha256 ok{}",
                task.head.kind,
                fmt_shape(&model.input_shape),
                fmt_shape(&model.output_shape),
                model.bytes,
                if default { "  (default)" } else { "" }
            )?;
        }
        writeln!(
            out,
            "  network   {} -> {}, {} KiB  sha256 ok (serial baseline)",
            fmt_shape(&net.input_shape),
            fmt_shape(&net.output_shape),
            net.bytes / 1024
        )?;
    }
    let p = &m.provenance;
    writeln!(
        out,
        "provenance  data: {}{}; backbone: {}; by {}",
        p.data,
        if p.synthetic {
            " (synthetic only: not for clinical use)"
        } else {
            ""
        },
        p.backbone_init,
        p.created_by
    )?;
    writeln!(out, "            command: {}", p.command)?;
    for (k, v) in &p.metrics {
        writeln!(out, "  metric    {k} = {v:.4}")?;
    }
    let bytes: usize = std::iter::once(&pack.backbone)
        .chain(&pack.heads)
        .chain(pack.int8_heads.iter().flatten())
        .chain(&networks)
        .map(|m| m.bytes)
        .sum();
    writeln!(
        out,
        "verified    {} files, {} KiB in all",
        pack.model_files(),
        bytes / 1024
    )?;
    writeln!(out, "machine     {}", tract_machine())?;
    Ok(())
}

/// What tract-linalg found on this CPU at run time (it picks its kernels from that, whatever
/// the build's flags): the instruction-set features (e.g. `aarch64,dotprod` on a Cortex-A76)
/// and its matrix-product tiers, best first. Differs per machine by design.
fn tract_machine() -> String {
    let isa = tract_linalg::isa::native();
    let tiers = tract_linalg::mmm_tiers::for_isa(&isa)
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(" > ");
    format!("tract-linalg: instruction set {isa:?}; matrix-product tiers {tiers}")
}
