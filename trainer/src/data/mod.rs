//! Datasets on disk: the labels CSV, clip folders of frames, and their preprocessed form.
//!
//! Layout (phantom data and prepared real data alike):
//! ```text
//! DIR/labels.csv                 clip,patient,view,lines,effusion  (empty cell = not labelled)
//! DIR/clips/<clip>/<frame>.png   frames of each clip, in name order
//! ```

pub mod covid_blues;
pub mod frames;
pub mod ingest;
pub mod labels;
pub mod phantom;
pub mod split;
