//! Datasets on disk: the labels CSV, clip folders of frames, and their preprocessed form.
//!
//! Layout (phantom data and prepared real data alike):
//! ```text
//! DIR/labels.csv                 clip,patient,view,lines,effusion  (empty cell = not labelled)
//! DIR/clips/<clip>/<frame>.png   frames of each clip, in name order
//! DIR/frames/index.json          the same frames in a frame store (see [`store`]): what the
//! DIR/frames/shard-NNNNN.bin     trainer reads when it is there (`prepare` and `phantom` write
//!                                it; `pleura-train convert` adds it to an older dataset)
//! ```

pub mod covid_blues;
pub mod frames;
pub mod ingest;
pub mod labels;
pub mod phantom;
pub mod split;
pub mod store;
