//! The tasks the trainer trains: the runtime's own task hierarchy ([`pleura::tasks`]), so that
//! a pack's tasks, gates and classes are defined once for both crates, plus how a labels CSV
//! names a class.

pub use pleura::tasks::{Task, TaskSet};

/// Class index of a labels-CSV cell for `task`: `Ok(None)` for an empty cell (not labelled);
/// class names are matched ignoring case and surrounding spaces. The error names the value and
/// the task's classes.
pub fn class_of_cell(task: &Task, value: &str) -> Result<Option<usize>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    task.classes
        .iter()
        .position(|c| c.eq_ignore_ascii_case(value))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "`{value}` is not a class of `{}` ({:?})",
                task.name, task.classes
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_read_class_names_and_blanks() {
        let set = TaskSet::standard();
        let lines = &set.tasks()[1];
        assert_eq!(class_of_cell(lines, "b_lines"), Ok(Some(1)));
        assert_eq!(class_of_cell(lines, " A_LINES "), Ok(Some(0)));
        assert_eq!(class_of_cell(lines, ""), Ok(None));
        assert!(class_of_cell(lines, "maybe").unwrap_err().contains("maybe"));
        assert_eq!(set.gate_names(1), Some(("view", "parenchymal")));
        assert_eq!(set.gate_names(0), None);
    }
}
