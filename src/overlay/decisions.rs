//! The decisions as panel lines: per task of a frame ([`frame_lines`]) or of a clip
//! ([`clip_lines`]), one [`Line`] each, coloured by what was decided.

use super::{colour, Bar, Line, Rgb};
use crate::clip::ClipRecord;
use crate::pipeline::TaskState;
use crate::smoothing::SmoothingConfig;
use crate::tasks::TaskSet;

/// The colour of a decided class: amber for the positive class (`classes[1]`), teal for the
/// negative one, grey while undecided.
pub fn decision_colour(class: Option<usize>) -> Rgb {
    match class {
        Some(1) => colour::AMBER,
        Some(_) => colour::TEAL,
        None => colour::GREY,
    }
}

/// One line per task of a frame: the smoothed probability as a bar (ticks at the smoothing's
/// bounds) and the decision; "skipped by the hierarchy" or "no reading: REASON" where the head
/// did not run. `smoothing` may be empty (then the default bounds are ticked).
pub fn frame_lines(
    tasks: &TaskSet,
    states: &[TaskState],
    smoothing: &[SmoothingConfig],
) -> Vec<Line> {
    let default = SmoothingConfig::default();
    tasks
        .iter()
        .zip(states)
        .enumerate()
        .map(|(i, (task, state))| {
            let config = smoothing.get(i).unwrap_or(&default);
            let (bar, text, colour) = match *state {
                TaskState::Ran { smoothed, .. } => {
                    let decided = smoothed.decision;
                    let word = decided.map_or("undecided", |c| task.classes[c].as_str());
                    let bar = Bar {
                        value: smoothed.probability,
                        ticks: [config.negative_below, config.positive_above],
                        colour: decision_colour(decided),
                    };
                    let text = format!("{:.2} {word}", smoothed.probability);
                    (Some(bar), text, decision_colour(decided))
                }
                TaskState::Skipped => (None, "skipped by the hierarchy".into(), colour::GREY),
                TaskState::NoReading { reason } => {
                    (None, format!("no reading: {reason}"), colour::RED)
                }
            };
            Line {
                label: task.name.clone(),
                bar,
                text,
                colour,
            }
        })
        .collect()
}

/// One line per task of a clip: the run score as a bar (tick at the decision threshold), the
/// clip's decision and the frames it rests on; "not assessed" for a task that never ran.
pub fn clip_lines(tasks: &TaskSet, clip: &ClipRecord) -> Vec<Line> {
    let decisions = clip.decisions(tasks);
    tasks
        .iter()
        .zip(&clip.tasks)
        .zip(decisions)
        .map(|((task, (_, c)), decided)| match (c.run_score, decided) {
            (Some(score), Some(class)) => Line {
                label: task.name.clone(),
                bar: Some(Bar {
                    value: score,
                    ticks: [task.threshold, task.threshold],
                    colour: decision_colour(Some(class)),
                }),
                text: format!("{} ({} fr)", task.classes[class], c.frames),
                colour: decision_colour(Some(class)),
            },
            _ => Line {
                label: task.name.clone(),
                bar: None,
                text: "not assessed".into(),
                colour: colour::GREY,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smoothing::Smoothed;

    #[test]
    fn each_state_has_its_words() {
        let tasks = TaskSet::standard();
        let states = [
            TaskState::Ran {
                p: 0.9,
                smoothed: Smoothed {
                    probability: 0.84,
                    decision: Some(1),
                },
            },
            TaskState::Skipped,
            TaskState::NoReading { reason: "frozen" },
        ];
        let lines = frame_lines(&tasks, &states, &[]);
        assert_eq!(lines[0].text, "0.84 pleural");
        assert_eq!(lines[0].bar.unwrap().ticks, [0.3, 0.7]);
        assert_eq!(lines[0].colour, colour::AMBER);
        assert_eq!(lines[1].text, "skipped by the hierarchy");
        assert!(lines[1].bar.is_none());
        assert_eq!(
            (lines[2].text.as_str(), lines[2].colour),
            ("no reading: frozen", colour::RED)
        );
    }
}
