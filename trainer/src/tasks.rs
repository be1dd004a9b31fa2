//! The three binary tasks of the paper and their clinical hierarchy.
//!
//! The view task runs on every frame; A-lines vs B-lines applies to parenchymal views and
//! pleural effusion to pleural views (VanBerlo et al. 2023, section on inference efficiency).

/// One binary task: its name (a column of the labels CSV), `[negative, positive]` classes, and
/// the `(task, class)` that gates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskDef {
    /// Task name, e.g. `view`.
    pub name: &'static str,
    /// `[negative, positive]` class names as written in the labels CSV.
    pub classes: [&'static str; 2],
    /// The task and class that must be decided for this task to apply.
    pub gate: Option<(&'static str, &'static str)>,
}

/// The standard LUS task set, gating task first.
pub const STANDARD: [TaskDef; 3] = [
    TaskDef {
        name: "view",
        classes: ["parenchymal", "pleural"],
        gate: None,
    },
    TaskDef {
        name: "lines",
        classes: ["a_lines", "b_lines"],
        gate: Some(("view", "parenchymal")),
    },
    TaskDef {
        name: "effusion",
        classes: ["absent", "present"],
        gate: Some(("view", "pleural")),
    },
];

impl TaskDef {
    /// Class index of a CSV value: `Ok(None)` for an empty cell (not labelled).
    pub fn class_index(&self, value: &str) -> Result<Option<usize>, String> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        self.classes
            .iter()
            .position(|c| c.eq_ignore_ascii_case(value))
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "`{value}` is not a class of `{}` ({:?})",
                    self.name, self.classes
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_index_reads_names_and_blanks() {
        let lines = &STANDARD[1];
        assert_eq!(lines.class_index("b_lines"), Ok(Some(1)));
        assert_eq!(lines.class_index(" A_LINES "), Ok(Some(0)));
        assert_eq!(lines.class_index(""), Ok(None));
        assert!(lines.class_index("maybe").unwrap_err().contains("maybe"));
    }

    #[test]
    fn gates_name_earlier_tasks_and_their_classes() {
        for (i, t) in STANDARD.iter().enumerate() {
            if let Some((task, class)) = t.gate {
                let parent = STANDARD[..i].iter().find(|p| p.name == task).unwrap();
                assert!(parent.classes.contains(&class));
            }
        }
    }
}
