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

/// Right and total samples per condition: what adds across the shards of a run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hits {
    pub hits: Vec<usize>,
    pub totals: Vec<usize>,
}

impl Hits {
    /// `predicted` against `expected`, sample `i` drawn under condition `condition[i]` of `conditions`.
    pub fn of(
        predicted: &[usize],
        expected: &[usize],
        condition: &[usize],
        conditions: usize,
    ) -> Self {
        let mut counts = Self {
            hits: vec![0; conditions],
            totals: vec![0; conditions],
        };
        for ((p, e), &c) in predicted.iter().zip(expected).zip(condition) {
            if c < conditions {
                counts.totals[c] += 1;
                counts.hits[c] += usize::from(p == e);
            }
        }
        counts
    }

    pub fn merge(&mut self, other: &Hits) -> Result<(), String> {
        if other.hits.len() != self.hits.len() {
            return Err(format!(
                "{} conditions cannot be added to {}",
                other.hits.len(),
                self.hits.len()
            ));
        }
        self.hits
            .iter_mut()
            .zip(&other.hits)
            .for_each(|(a, b)| *a += b);
        (self.totals.iter_mut())
            .zip(&other.totals)
            .for_each(|(a, b)| *a += b);
        Ok(())
    }

    /// A condition without samples scores 0 (it cannot be right).
    pub fn accuracy(&self) -> Accuracy {
        let share = |h: usize, n: usize| if n == 0 { 0.0 } else { h as f64 / n as f64 };
        Accuracy {
            overall: share(self.hits.iter().sum(), self.totals.iter().sum()),
            per_condition: (self.hits.iter().zip(&self.totals))
                .map(|(&h, &n)| share(h, n))
                .collect(),
        }
    }
}

/// Accuracy of `predicted` against `expected`, sample `i` drawn under condition `condition[i]` of
/// `conditions`. A condition without samples scores 0 (it cannot be right).
pub fn accuracy(
    predicted: &[usize],
    expected: &[usize],
    condition: &[usize],
    conditions: usize,
) -> Accuracy {
    Hits::of(predicted, expected, condition, conditions).accuracy()
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

    #[test]
    fn hits_of_parts_add_up_to_the_whole() {
        let (predicted, expected, condition) = ([3, 3, 7, 1, 7], [3, 3, 7, 7, 7], [0, 0, 1, 1, 1]);
        let whole = Hits::of(&predicted, &expected, &condition, 2);
        let mut parts = Hits::of(&predicted[..2], &expected[..2], &condition[..2], 2);
        parts
            .merge(&Hits::of(
                &predicted[2..],
                &expected[2..],
                &condition[2..],
                2,
            ))
            .expect("same conditions");
        assert_eq!(parts, whole);
        assert_eq!(whole.accuracy().per_condition, [1.0, 2.0 / 3.0]);
        assert!(parts.merge(&Hits::of(&[], &[], &[], 3)).is_err());
    }
}
