//! Synthetic B-mode lung ultrasound (LUS) phantom.
//!
//! Renders clips of grey frames that read as lung ultrasound, with exact labels for the three
//! tasks of the clinical hierarchy: view (parenchymal or pleural), A-lines vs B-lines on
//! parenchymal views, and pleural effusion present/absent on pleural views.
//!
//! What is modelled:
//! - convex (fan with a curved top, black outside) and linear (rectangle) probes;
//! - Rayleigh speckle from complex scatterer fields blurred by a laterally elongated
//!   point-spread function; the speckle is fixed to the tissue, so it stays coherent from frame
//!   to frame and moves with whatever moves (sliding lung, breathing liver);
//! - log compression, gain, time-gain compensation with a residual depth slope;
//! - chest wall: skin, subcutaneous fat, fascia lines, striated muscle;
//! - ribs: a bright curved surface with an anechoic acoustic shadow beneath;
//! - the pleural line, sliding laterally with breathing (lung sliding), with the lung texture
//!   below it moving along and shimmering;
//! - A-lines: fading repeats of the pleural line at integer multiples of its depth;
//! - B-lines: bright comet tails from the pleura to the bottom that erase A-lines and move with
//!   the pleura (none to confluent);
//! - pleural view: the bright curved diaphragm over liver/spleen-like tissue with vessels,
//!   breathing; without effusion the aerated lung covers the costophrenic region (curtain sign);
//!   with effusion an anechoic space lies above the diaphragm, with compressed lung and the
//!   spine visible through the fluid.
//!
//! Everything is deterministic: a clip's pixels depend only on its [`ClipParams`], the frame
//! size and the frame index.

mod canvas;
mod chest;
mod cohort;
#[cfg(test)]
mod frame_tests;
mod geometry;
mod lung;
mod montage;
mod params;
mod pleural;
mod render;
mod sampling;
mod speckle;

pub use cohort::{cohort, CohortClip};
pub use montage::montage;
pub use params::{BLine, ClipParams, PleuralScene, Rib, Vessel};
pub use render::Clip;

use serde::{Deserialize, Serialize};

/// The kind of transducer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// Curved array: a fan-shaped (annular sector) image, black outside the sector.
    Convex,
    /// Linear array: a rectangular image.
    Linear,
}

/// The two views of the clinical task hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// Intercostal view of the lung: ribs, pleural line, A-lines or B-lines.
    Parenchymal,
    /// Flank view of the costophrenic region: diaphragm, liver/spleen, effusion or lung.
    Pleural,
}

impl View {
    /// Lower-case name: `"parenchymal"` or `"pleural"`.
    pub fn as_str(self) -> &'static str {
        match self {
            View::Parenchymal => "parenchymal",
            View::Pleural => "pleural",
        }
    }
}

/// Labels of one frame for the three tasks.
///
/// `b_lines`: `Some(true)` = B-lines, `Some(false)` = A-lines, `None` on a pleural view.
/// `effusion`: `Some(bool)` on a pleural view, `None` on a parenchymal view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Labels {
    /// Which view the frame shows.
    pub view: View,
    /// A-lines (`Some(false)`) or B-lines (`Some(true)`); `None` on pleural views.
    pub b_lines: Option<bool>,
    /// Pleural effusion present or absent; `None` on parenchymal views.
    pub effusion: Option<bool>,
}

impl Labels {
    /// The four label combinations, in the order: parenchymal A-lines, parenchymal B-lines,
    /// pleural without effusion, pleural with effusion.
    pub const ALL: [Labels; 4] = [
        Labels::parenchymal(false),
        Labels::parenchymal(true),
        Labels::pleural(false),
        Labels::pleural(true),
    ];

    /// Parenchymal view with B-lines (`true`) or A-lines (`false`).
    pub const fn parenchymal(b_lines: bool) -> Self {
        Self {
            view: View::Parenchymal,
            b_lines: Some(b_lines),
            effusion: None,
        }
    }

    /// Pleural view with (`true`) or without (`false`) effusion.
    pub const fn pleural(effusion: bool) -> Self {
        Self {
            view: View::Pleural,
            b_lines: None,
            effusion: Some(effusion),
        }
    }

    /// Whether the labels follow the hierarchy (exactly one of the per-view labels is set,
    /// the one that belongs to the view).
    pub fn is_consistent(&self) -> bool {
        match self.view {
            View::Parenchymal => self.b_lines.is_some() && self.effusion.is_none(),
            View::Pleural => self.b_lines.is_none() && self.effusion.is_some(),
        }
    }

    /// A short name: `"a-lines"`, `"b-lines"`, `"no-effusion"` or `"effusion"`.
    pub fn name(&self) -> &'static str {
        match (self.view, self.b_lines, self.effusion) {
            (View::Parenchymal, Some(true), _) => "b-lines",
            (View::Parenchymal, _, _) => "a-lines",
            (View::Pleural, _, Some(true)) => "effusion",
            (View::Pleural, _, _) => "no-effusion",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_consistent_and_named() {
        let names: Vec<&str> = Labels::ALL.iter().map(|l| l.name()).collect();
        assert_eq!(names, ["a-lines", "b-lines", "no-effusion", "effusion"]);
        assert!(Labels::ALL.iter().all(|l| l.is_consistent()));
        let bad = Labels {
            view: View::Pleural,
            b_lines: Some(true),
            effusion: None,
        };
        assert!(!bad.is_consistent());
        assert_eq!(View::Pleural.as_str(), "pleural");
        assert_eq!(View::Parenchymal.as_str(), "parenchymal");
    }
}
