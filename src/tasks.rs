//! The clinical hierarchy in one place: the tasks of a pack, which decision gates which, how a
//! probability becomes a decision, and what ground truth is.
//!
//! VanBerlo et al. (2023) run three binary tasks in a hierarchy: the view (parenchymal or
//! pleural) runs on every frame and decides whether A-lines vs B-lines (parenchymal view) or
//! pleural effusion (pleural view) is assessed. A [`TaskSet`] holds such a hierarchy with its
//! gates resolved to indices: [`Pack::load`](crate::pack::Pack::load) builds one from the
//! manifest (checking it), [`TaskSet::standard`] is the paper's. Everything that decides which
//! heads or networks run asks the one rule, [`TaskSet::runs`]; everything that turns a
//! probability into a class asks [`Task::decide`] (threshold [`DECISION_THRESHOLD`]).
//!
//! # Which decisions gate, and why
//!
//! [`TaskSet::runs`] takes the decisions of the frame so far; the caller says which ones:
//!
//! - **the live loop** (`pleura run`, [`crate::pipeline`]) passes the **smoothed** decisions
//!   ([`crate::smoothing`]: 17-frame average, 7 consecutive frames beyond the band). A scan is a
//!   stream: gating on single frames would switch the A-/B-lines and effusion heads on and off
//!   with every noisy view probability, and their own smoothers would never fill. While the
//!   view is undecided neither gated task runs.
//! - **the benchmark** (`pleura bench`) passes the **raw** per-frame decisions of the path it
//!   times: the heads' for the shared path, the view network's for the serial path. It measures
//!   one frame at a time, as the paper's inference-efficiency comparison does, and each path
//!   must gate on its own outputs so that both do the same work for the same frame.
//!
//! In [`TaskMode::AllTasks`] every task runs on every frame whatever the decisions.
//!
//! # Ground truth
//!
//! A [`Truth`] names, per task, the true class of a frame (`{"view": "pleural", "effusion":
//! "present"}`); synthetic sources attach one to each frame ([`phantom`] maps the phantom's
//! labels), and recordings keep it. [`TaskSet::classes_of`] resolves it against a pack's tasks
//! by task and class name: a pack whose tasks the truth does not name gets `None` for them,
//! and reports say so rather than leaving the statistics out silently.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

use crate::phantom::{Labels, View};

/// Probability at or above which a task decides its positive class (`classes[1]`).
pub const DECISION_THRESHOLD: f32 = 0.5;

/// Which tasks run on a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TaskMode {
    /// Ungated tasks always; a gated task only while its gate is open (the clinical workflow).
    #[default]
    Hierarchy,
    /// Every task on every frame.
    AllTasks,
}

/// The decision that enables a gated task: task `task` (an index into the same [`TaskSet`],
/// always an earlier, ungated task) decided class `class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// Index of the gating task.
    pub task: usize,
    /// Class index of the gating task that enables this one.
    pub class: usize,
}

/// One binary task.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Task name, e.g. `view`.
    pub name: String,
    /// `[negative, positive]` class names: a head gives the probability of `classes[1]`.
    pub classes: [String; 2],
    /// `None` for a task that runs on every frame.
    pub gate: Option<Gate>,
    /// Probability at or above which the positive class is decided ([`DECISION_THRESHOLD`]:
    /// manifests carry no threshold of their own yet).
    pub threshold: f32,
}

impl Task {
    /// The class index a probability decides: 1 (positive) when `p >= threshold`, else 0.
    pub fn decide(&self, p: f32) -> usize {
        usize::from(p >= self.threshold)
    }

    /// The class name a probability decides.
    pub fn decide_name(&self, p: f32) -> &str {
        &self.classes[self.decide(p)]
    }

    /// Index of the class called `name`.
    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == name)
    }
}

/// A task as declared (a manifest entry, or the standard table), before its gate is resolved.
#[derive(Clone, Copy, Debug)]
pub struct TaskDecl<'a> {
    /// Task name.
    pub name: &'a str,
    /// `[negative, positive]` class names.
    pub classes: [&'a str; 2],
    /// `(gating task name, class name of it)`, `None` for a task run on every frame.
    pub gate: Option<(&'a str, &'a str)>,
}

/// The standard LUS task set of the paper, gating task first.
const STANDARD: [TaskDecl<'static>; 3] = [
    TaskDecl {
        name: "view",
        classes: ["parenchymal", "pleural"],
        gate: None,
    },
    TaskDecl {
        name: "lines",
        classes: ["a_lines", "b_lines"],
        gate: Some(("view", "parenchymal")),
    },
    TaskDecl {
        name: "effusion",
        classes: ["absent", "present"],
        gate: Some(("view", "pleural")),
    },
];

/// A checked task hierarchy: unique names, gates resolved to indices of earlier, ungated tasks.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSet {
    tasks: Vec<Task>,
}

impl TaskSet {
    /// The paper's tasks: `view` (parenchymal / pleural) on every frame, `lines` (a_lines /
    /// b_lines) on parenchymal views, `effusion` (absent / present) on pleural views.
    pub fn standard() -> TaskSet {
        match TaskSet::new(STANDARD) {
            Ok(set) => set,
            Err(err) => unreachable!("the standard task set is valid: {err:#}"),
        }
    }

    /// Checks `decls` and resolves their gates. Errors name the task as `tasks[i] (name)`,
    /// the manifest's field: no task, a duplicate name, a gate naming no earlier task, a gated
    /// gating task (gates are one level deep) or a class the gating task lacks.
    pub fn new<'a>(decls: impl IntoIterator<Item = TaskDecl<'a>>) -> Result<TaskSet> {
        let mut tasks: Vec<Task> = Vec::new();
        for (i, decl) in decls.into_iter().enumerate() {
            let field = format!("tasks[{i}] ({})", decl.name);
            ensure!(
                tasks.iter().all(|t| t.name != decl.name),
                "field `{field}.name`: duplicate task name"
            );
            let gate = match decl.gate {
                None => None,
                Some((task, class)) => {
                    let Some(parent) = tasks.iter().position(|t| t.name == task) else {
                        bail!(
                            "field `{field}.gate.task`: `{task}` is not a task listed before `{}`",
                            decl.name
                        );
                    };
                    ensure!(
                        tasks[parent].gate.is_none(),
                        "field `{field}.gate.task`: `{task}` is itself gated; gates are one level \
                         deep"
                    );
                    let Some(class) = tasks[parent].class_index(class) else {
                        bail!(
                            "field `{field}.gate.class`: `{class}` is not a class of `{task}` \
                             ({:?})",
                            tasks[parent].classes
                        );
                    };
                    Some(Gate {
                        task: parent,
                        class,
                    })
                }
            };
            tasks.push(Task {
                name: decl.name.to_string(),
                classes: decl.classes.map(str::to_string),
                gate,
                threshold: DECISION_THRESHOLD,
            });
        }
        ensure!(!tasks.is_empty(), "field `tasks`: the pack has no task");
        Ok(TaskSet { tasks })
    }

    /// The tasks, gating tasks before the tasks they gate.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// Iterates over the tasks in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Task> {
        self.tasks.iter()
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// `true` when there is no task (never for a checked set).
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Index of the task called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }

    /// `(gating task name, class name)` of task `i`, `None` for an ungated task.
    pub fn gate_names(&self, i: usize) -> Option<(&str, &str)> {
        let gate = self.tasks[i].gate?;
        let parent = &self.tasks[gate.task];
        Some((parent.name.as_str(), parent.classes[gate.class].as_str()))
    }

    /// Task names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.tasks.iter().map(|t| t.name.as_str()).collect()
    }

    /// THE gating rule: whether task `task` runs on a frame in `mode`, given `decisions`, the
    /// class index each task decided on this frame so far (`None`: not run, or undecided).
    /// Gating tasks come first, so a caller that walks the tasks in order has decided the
    /// gate of each task before it asks. Which decisions (raw or smoothed): see the module
    /// documentation.
    pub fn runs(&self, mode: TaskMode, task: usize, decisions: &[Option<usize>]) -> bool {
        match (mode, self.tasks[task].gate) {
            (TaskMode::AllTasks, _) | (_, None) => true,
            (TaskMode::Hierarchy, Some(gate)) => decisions[gate.task] == Some(gate.class),
        }
    }

    /// Per task (in order): the class index `truth` gives it, `None` where the truth names no
    /// class for the task, or one the task does not have.
    pub fn classes_of(&self, truth: &Truth) -> Vec<Option<usize>> {
        self.tasks
            .iter()
            .map(|t| truth.class(&t.name).and_then(|c| t.class_index(c)))
            .collect()
    }

    /// The truth that gives task `i` the class `classes[i]` (`None`: not known).
    pub fn truth(&self, classes: &[Option<usize>]) -> Truth {
        let mut truth = Truth::default();
        for (task, class) in self.tasks.iter().zip(classes) {
            if let Some(c) = class {
                truth.insert(&task.name, &task.classes[*c]);
            }
        }
        truth
    }
}

impl<'a> IntoIterator for &'a TaskSet {
    type Item = &'a Task;
    type IntoIter = std::slice::Iter<'a, Task>;
    fn into_iter(self) -> Self::IntoIter {
        self.tasks.iter()
    }
}

impl std::ops::Index<usize> for TaskSet {
    type Output = Task;
    fn index(&self, i: usize) -> &Task {
        &self.tasks[i]
    }
}

/// Ground truth of one frame: per task name, the name of its true class. Tasks that do not
/// apply to the frame (effusion on a parenchymal view) are absent. Serialised as a JSON object,
/// e.g. `{"effusion": "present", "view": "pleural"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Truth(BTreeMap<String, String>);

impl Truth {
    /// Sets the true class of `task`.
    pub fn insert(&mut self, task: &str, class: &str) {
        self.0.insert(task.to_string(), class.to_string());
    }

    /// The true class of `task`, if known.
    pub fn class(&self, task: &str) -> Option<&str> {
        self.0.get(task).map(String::as_str)
    }

    /// `true` when no task's class is known.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(task, class)` pairs, by task name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(t, c)| (t.as_str(), c.as_str()))
    }
}

/// The phantom's labels as ground truth for `tasks`: each task of `tasks` that is one of the
/// standard tasks ([`TaskSet::standard`], same name and classes) gets the class the labels give
/// it; other tasks get none. The trainer labels its phantom datasets with this too.
pub fn phantom(labels: &Labels, tasks: &TaskSet) -> Truth {
    let standard = TaskSet::standard();
    let classes = [
        Some(usize::from(labels.view == View::Pleural)),
        labels.b_lines.map(usize::from),
        labels.effusion.map(usize::from),
    ];
    let mut truth = Truth::default();
    for task in tasks {
        let known = standard
            .iter()
            .zip(classes)
            .find(|(s, _)| s.name == task.name && s.classes == task.classes);
        if let Some((s, Some(class))) = known {
            truth.insert(&s.name, &s.classes[class]);
        }
    }
    truth
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl<'a>(name: &'a str, gate: Option<(&'a str, &'a str)>) -> TaskDecl<'a> {
        TaskDecl {
            name,
            classes: ["no", "yes"],
            gate,
        }
    }

    #[test]
    fn the_standard_set_gates_lines_and_effusion_on_the_view() {
        let set = TaskSet::standard();
        assert_eq!(set.names(), ["view", "lines", "effusion"]);
        assert_eq!(set[0].gate, None);
        assert_eq!(set[1].gate, Some(Gate { task: 0, class: 0 }));
        assert_eq!(set[2].gate, Some(Gate { task: 0, class: 1 }));
        let h = TaskMode::Hierarchy;
        // Pleural view decided: effusion runs, lines does not.
        let pleural = [Some(1), None, None];
        assert!(set.runs(h, 0, &pleural) && !set.runs(h, 1, &pleural) && set.runs(h, 2, &pleural));
        // Undecided view: neither gated task.
        let undecided = [None, None, None];
        assert!(!set.runs(h, 1, &undecided) && !set.runs(h, 2, &undecided));
        assert!((0..3).all(|i| set.runs(TaskMode::AllTasks, i, &undecided)));
    }

    #[test]
    fn the_threshold_decides_at_one_half() {
        let view = &TaskSet::standard()[0];
        assert_eq!(view.decide(DECISION_THRESHOLD), 1);
        assert_eq!(view.decide(0.499_999), 0);
        assert_eq!(view.decide_name(0.9), "pleural");
    }

    #[test]
    fn bad_hierarchies_name_the_field() {
        let err = |decls: Vec<TaskDecl>| format!("{:#}", TaskSet::new(decls).unwrap_err());
        assert!(err(vec![]).contains("no task"));
        let e = err(vec![decl("a", None), decl("a", None)]);
        assert!(
            e.contains("tasks[1] (a).name") && e.contains("duplicate"),
            "{e}"
        );
        let e = err(vec![decl("a", Some(("b", "yes"))), decl("b", None)]);
        assert!(
            e.contains("tasks[0] (a).gate.task") && e.contains("`b`"),
            "{e}"
        );
        let e = err(vec![
            decl("a", None),
            decl("b", Some(("a", "yes"))),
            decl("c", Some(("b", "no"))),
        ]);
        assert!(
            e.contains("tasks[2] (c).gate.task") && e.contains("one level"),
            "{e}"
        );
        let e = err(vec![decl("a", None), decl("b", Some(("a", "maybe")))]);
        assert!(
            e.contains("tasks[1] (b).gate.class") && e.contains("maybe"),
            "{e}"
        );
    }

    #[test]
    fn phantom_labels_become_truth_for_the_tasks_that_know_them() {
        let set = TaskSet::standard();
        let truth = phantom(&Labels::pleural(true), &set);
        assert_eq!(truth.class("view"), Some("pleural"));
        assert_eq!(truth.class("effusion"), Some("present"));
        assert_eq!(truth.class("lines"), None);
        assert_eq!(set.classes_of(&truth), [Some(1), None, Some(1)]);
        assert_eq!(set.truth(&set.classes_of(&truth)), truth);
        assert_eq!(
            serde_json::to_string(&truth).unwrap(),
            r#"{"effusion":"present","view":"pleural"}"#
        );
        let truth = phantom(&Labels::parenchymal(false), &set);
        assert_eq!(set.classes_of(&truth), [Some(0), Some(0), None]);

        // A pack with other tasks: only the ones the phantom knows (name and classes) get truth.
        let other = TaskSet::new([
            TaskDecl {
                name: "view",
                classes: ["lung", "flank"],
                gate: None,
            },
            decl("consolidation", None),
        ])
        .unwrap();
        let truth = phantom(&Labels::pleural(false), &other);
        assert!(truth.is_empty());
        assert_eq!(other.classes_of(&truth), [None, None]);
    }
}
