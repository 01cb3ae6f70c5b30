//! Prompt accuracy: the share of samples a classifier assigns to the class their prompt (or class label)
//! asked for, over a cell and per condition.

/// The largest logit's class of each row of `logits` ([N, classes], row-major).
pub fn predicted_classes(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks(classes.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(k, _)| k)
        })
        .collect()
}

/// A cell's accuracy: over all its samples, and per condition (prompt or class) in condition order.
#[derive(Debug, Clone, PartialEq)]
pub struct Accuracy {
    pub overall: f64,
    pub per_condition: Vec<f64>,
}

/// Accuracy of `predicted` against `expected`, sample `i` drawn under condition `condition[i]` of
/// `conditions`. A condition without samples scores 0 (it cannot be right).
pub fn accuracy(
    predicted: &[usize],
    expected: &[usize],
    condition: &[usize],
    conditions: usize,
) -> Accuracy {
    let mut hits = vec![0usize; conditions];
    let mut totals = vec![0usize; conditions];
    for ((p, e), &c) in predicted.iter().zip(expected).zip(condition) {
        if c < conditions {
            totals[c] += 1;
            hits[c] += usize::from(p == e);
        }
    }
    let share = |h: usize, n: usize| if n == 0 { 0.0 } else { h as f64 / n as f64 };
    Accuracy {
        overall: share(hits.iter().sum(), totals.iter().sum()),
        per_condition: hits
            .iter()
            .zip(&totals)
            .map(|(&h, &n)| share(h, n))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_logit_wins() {
        let logits = [0.1, 2.0, -1.0, 5.0, 0.0, 4.9];
        assert_eq!(predicted_classes(&logits, 3), [1, 0]);
    }

    #[test]
    fn accuracy_counts_hits_overall_and_per_condition() {
        // Prompts "3" and "7", two samples each; one "7" sample came out a 1.
        let predicted = [3, 3, 7, 1];
        let expected = [3, 3, 7, 7];
        let condition = [0, 0, 1, 1];
        let a = accuracy(&predicted, &expected, &condition, 2);
        assert_eq!(a.overall, 0.75);
        assert_eq!(a.per_condition, [1.0, 0.5]);
        let none = accuracy(&[], &[], &[], 2);
        assert_eq!((none.overall, none.per_condition), (0.0, vec![0.0, 0.0]));
    }
}
