//! What the Training view shows besides curves: each run's logged images — where they are, never their
//! pixels, which the image worker reads when a panel shows them — and what the logs say of each run (state,
//! name, config, summary), per log file, so a resumed run shows every segment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::metrics::diff::{Config, Differing, config_of, differing};
use crate::metrics::store::Facts;
use crate::metrics::{FactKind, Format, ImageSource, LogImage};

/// A logged image: its step and size, and where to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingImage {
    pub step: i64,
    pub width: u32,
    pub height: u32,
    pub caption: Option<String>,
    pub log: Arc<Path>,
    pub format: Format,
    pub source: ImageSource,
}

impl TrainingImage {
    pub fn new(image: &LogImage, log: Arc<Path>, format: Format) -> Self {
        TrainingImage {
            step: image.step,
            width: image.width,
            height: image.height,
            caption: image.caption.clone(),
            log,
            format,
            source: image.source.clone(),
        }
    }

    /// The images one log reported, in order.
    pub fn all(images: &[LogImage], log: &Arc<Path>, format: Format) -> Vec<Self> {
        images
            .iter()
            .map(|i| Self::new(i, log.clone(), format))
            .collect()
    }
}

/// The images one run logged under one tag, in the order read.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTag {
    pub run: String,
    pub tag: String,
    pub images: Vec<TrainingImage>,
}

/// One image panel: a tag of a run at the step shown, and which of its images that step has.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePanel {
    pub run: String,
    pub tag: String,
    pub step: i64,
    /// The step's place among the tag's logged steps, from 1, and how many there are.
    pub position: usize,
    pub steps: usize,
    /// (index into [`TrainingMedia::tags`], index into its images).
    pub images: Vec<(usize, usize)>,
}

/// Images and facts of every run read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingMedia {
    pub tags: Vec<ImageTag>,
    /// By run, then by the log file that says it.
    pub facts: BTreeMap<String, BTreeMap<PathBuf, Facts>>,
    /// How many logged steps back from each tag's latest the image panels show (0: the latest).
    pub back: usize,
    /// Changes when images are replaced, so encodings of an index are not reused for another image.
    pub version: u64,
}

impl TrainingMedia {
    pub fn add_images(&mut self, run: &str, images: Vec<(String, Vec<TrainingImage>)>) {
        for (tag, list) in images {
            match self.tags.iter_mut().find(|t| t.run == run && t.tag == tag) {
                Some(t) => t.images.extend(list),
                None => self.tags.push(ImageTag {
                    run: run.to_owned(),
                    tag,
                    images: list,
                }),
            }
        }
    }

    pub fn add_facts(&mut self, run: &str, log: PathBuf, facts: Vec<(FactKind, String, Value)>) {
        let held = self
            .facts
            .entry(run.to_owned())
            .or_default()
            .entry(log)
            .or_default();
        for (kind, key, value) in facts {
            held.insert((kind, key), value);
        }
    }

    /// A run read again from the start: its images and facts are these now.
    pub fn replace(
        &mut self,
        run: &str,
        images: Vec<(String, Vec<TrainingImage>)>,
        facts: BTreeMap<PathBuf, Facts>,
    ) {
        self.tags.retain(|t| t.run != run);
        self.add_images(run, images);
        self.facts.insert(run.to_owned(), facts);
        self.version += 1;
    }

    /// Every run with images or facts, in the order first seen (images) then by name (facts).
    pub fn runs(&self) -> impl Iterator<Item = &str> {
        self.tags
            .iter()
            .map(|t| t.run.as_str())
            .chain(self.facts.keys().map(String::as_str))
    }

    pub fn earlier(&mut self) {
        let most = self
            .tags
            .iter()
            .map(|t| steps_of(t).len())
            .max()
            .unwrap_or(1);
        self.back = (self.back + 1).min(most.saturating_sub(1));
    }

    pub fn later(&mut self) {
        self.back = self.back.saturating_sub(1);
    }

    /// A panel per shown tag, each at its step `back` steps before its latest (its first when it has fewer).
    pub fn panels(&self, shows: impl Fn(&str, &str) -> bool) -> Vec<ImagePanel> {
        let mut panels = Vec::new();
        for (t, tag) in self.tags.iter().enumerate() {
            if !shows(&tag.run, &tag.tag) {
                continue;
            }
            let steps = steps_of(tag);
            let Some(last) = steps.len().checked_sub(1) else {
                continue;
            };
            let at = last - self.back.min(last);
            let step = steps[at];
            let images = (tag.images.iter().enumerate())
                .filter(|(_, i)| i.step == step)
                .map(|(i, _)| (t, i))
                .collect();
            panels.push(ImagePanel {
                run: tag.run.clone(),
                tag: tag.tag.clone(),
                step,
                position: at + 1,
                steps: steps.len(),
                images,
            });
        }
        panels
    }

    pub fn image(&self, tag: usize, index: usize) -> Option<&TrainingImage> {
        self.tags.get(tag)?.images.get(index)
    }

    /// What the run's logs say of it, later files replacing earlier ones (a resumed run's last part).
    pub fn run_facts(&self, run: &str) -> Facts {
        let mut all = Facts::new();
        for facts in self.facts.get(run).into_iter().flat_map(BTreeMap::values) {
            all.extend(facts.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        all
    }

    /// The run's log files that say something of it (the segments of a resumed run), in order.
    pub fn segments(&self, run: &str) -> Vec<(&Path, &Facts)> {
        let logs = self.facts.get(run).into_iter().flat_map(BTreeMap::iter);
        logs.map(|(p, f)| (p.as_path(), f)).collect()
    }

    /// The config keys whose values differ between `runs`.
    pub fn differing(&self, runs: &[String]) -> Vec<Differing> {
        let configs: Vec<Config> = runs.iter().map(|r| config_of(&self.run_facts(r))).collect();
        differing(&configs)
    }
}

/// A tag's logged steps, in order, each once.
fn steps_of(tag: &ImageTag) -> Vec<i64> {
    let mut steps: Vec<i64> = tag.images.iter().map(|i| i.step).collect();
    steps.sort_unstable();
    steps.dedup();
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(step: i64) -> TrainingImage {
        TrainingImage {
            step,
            width: 16,
            height: 16,
            caption: None,
            log: Arc::from(Path::new("run/log")),
            format: Format::TfEvents,
            source: ImageSource::File("x.png".into()),
        }
    }

    #[test]
    fn panels_step_back_through_each_tags_own_steps() {
        let mut media = TrainingMedia::default();
        media.add_images(
            "a",
            vec![(
                "val".into(),
                vec![image(0), image(0), image(10), image(20), image(20)],
            )],
        );
        media.add_images("b", vec![("val".into(), vec![image(5)])]);
        let panels = media.panels(|_, _| true);
        assert_eq!(
            (panels[0].step, panels[0].position, panels[0].steps),
            (20, 3, 3)
        );
        assert_eq!(panels[0].images, [(0, 3), (0, 4)]);
        media.earlier();
        media.earlier();
        media.earlier();
        let panels = media.panels(|_, _| true);
        assert_eq!((panels[0].step, panels[0].images.len()), (0, 2));
        // A tag with fewer steps stays at its first.
        assert_eq!(panels[1].step, 5);
        media.later();
        assert_eq!(media.panels(|_, _| true)[0].step, 10);
    }
}
