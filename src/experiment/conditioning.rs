//! `[conditioning]`: what the model is conditioned on, text (prompts or their embeddings) or a class.

use std::path::PathBuf;

use toml::Spanned;

use super::schema::{ConditioningSection, Instruction};
use super::{ExperimentError, ModelSource, Reading};

/// What every sample is conditioned on: prompt rows (or precomputed embedding rows), or class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditioningSpec {
    /// One row per prompt; the seeds repeat for each. Only labels when `embeddings` is given.
    pub prompts: Vec<String>,
    /// `None`: the lab decides ("" or zeros, as the pipeline does).
    pub negative_prompt: Option<String>,
    /// A [P, S, D] .npy of text embeddings, used instead of a text encoder (resolved).
    pub embeddings: Option<PathBuf>,
    /// Class-conditional: seed i uses `classes[i % len]`.
    pub classes: Vec<i64>,
    /// The unconditional class for classifier-free guidance.
    pub null_class: Option<i64>,
    /// T5's token count for SD3 and Flux prompts, Gemma's for Sana (`None`: the pipeline's default, 256, 512
    /// or 300).
    pub max_sequence_length: Option<usize>,
    /// Sana's complex human instruction, when the experiment sets it (`None`: the pipeline's default).
    pub complex_human_instruction: Option<HumanInstruction>,
    /// The images img2img starts from (resolved), and which sample takes which.
    pub init_images: Vec<PathBuf>,
    pub init_per: InitPer,
    /// Inpainting masks (resolved): none, one for every start image, or one per start image.
    pub masks: Vec<PathBuf>,
    /// Each ControlNet's control images, in the order the model takes the ControlNets (none: no ControlNet).
    pub controls: Vec<ControlImageSet>,
}

/// One ControlNet's control images (resolved), and which sample takes which.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlImageSet {
    pub images: Vec<PathBuf>,
    pub per: InitPer,
}

/// Which start image a sample takes when `init_image` lists several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitPer {
    /// One image for every sample.
    #[default]
    All,
    /// Image k for prompt (or class) k.
    Condition,
    /// Image k for seed k (seeds past the list start again from its first).
    Seed,
}

impl InitPer {
    /// Which of `n` images a sample drawn under condition `condition` with the seed at `seed_index` takes.
    pub fn pick(self, n: usize, condition: usize, seed_index: usize) -> usize {
        match self {
            InitPer::All => 0,
            InitPer::Condition => condition % n,
            InitPer::Seed => seed_index % n,
        }
    }
}

impl ConditioningSpec {
    /// The start image of a sample drawn under condition `condition` with the seed at `seed_index`.
    pub fn init_image_index(&self, condition: usize, seed_index: usize) -> Option<usize> {
        let n = self.init_images.len();
        (n > 0).then(|| self.init_per.pick(n, condition, seed_index))
    }
}

/// `complex_human_instruction` as the experiment gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum HumanInstruction {
    /// `true`: SanaPipeline's own default lines.
    PipelineDefault,
    /// `false`: prompts go to Gemma as they are.
    Off,
    /// The lines, joined with newlines before each prompt, as the pipeline joins them.
    Lines(Vec<String>),
}

impl Reading<'_> {
    /// `[conditioning]`; an empty table is a warning and conditions nothing.
    pub(super) fn conditioning(
        &mut self,
        c: &Spanned<ConditioningSection>,
        source: &ModelSource,
    ) -> Result<Option<ConditioningSpec>, ExperimentError> {
        if *source == ModelSource::Analytic {
            let message = "the analytic model takes no conditioning; remove [conditioning]";
            return Err(self.error(c.span(), "conditioning", message));
        }
        let s = c.get_ref();
        if s.prompts.is_none()
            && s.negative_prompt.is_none()
            && s.embeddings.is_none()
            && s.classes.is_none()
            && s.null_class.is_none()
            && s.init_image.is_none()
            && s.mask.is_none()
            && s.control_image.is_none()
            && s.controlnet.is_none()
        {
            let message = "[conditioning] is empty; the model runs unconditioned".to_string();
            self.warn(None, c.span(), "conditioning", message);
            return Ok(None);
        }
        self.text_or_class(s)?;
        let prompts = s
            .prompts
            .as_ref()
            .map_or(Vec::new(), |p| p.get_ref().clone());
        let embeddings = s
            .embeddings
            .as_ref()
            .map(|e| self.existing_file(e, "conditioning.embeddings", "embeddings file"))
            .transpose()?;
        Ok(Some(ConditioningSpec {
            prompts,
            negative_prompt: s.negative_prompt.as_ref().map(|n| n.get_ref().clone()),
            embeddings,
            classes: self.classes(s)?,
            null_class: s.null_class.as_ref().map(|n| *n.get_ref()),
            max_sequence_length: self.max_sequence_length(s)?,
            complex_human_instruction: self.complex_human_instruction(s)?,
            init_images: self.init_images(s)?,
            init_per: InitPer::All,
            masks: self.masks(s)?,
            controls: self.controls(c)?,
        }))
    }

    /// A run is text- or class-conditional, never both; a negative prompt goes with text, a null
    /// class with classes.
    fn text_or_class(&self, s: &ConditioningSection) -> Result<(), ExperimentError> {
        let text = s.prompts.is_some() || s.embeddings.is_some();
        if let (true, Some(c)) = (text, &s.classes) {
            let message = "give prompts (or embeddings) or classes, not both: a run is text- or class-conditional";
            return Err(self.error(c.span(), "conditioning.classes", message));
        }
        if let Some(p) = s.prompts.as_ref().filter(|p| p.get_ref().is_empty()) {
            let message = "list at least one prompt";
            return Err(self.error(p.span(), "conditioning.prompts", message));
        }
        if let (false, Some(n)) = (text, &s.negative_prompt) {
            let message = "a negative prompt goes with `prompts` or `embeddings`";
            return Err(self.error(n.span(), "conditioning.negative_prompt", message));
        }
        if let (None, Some(n)) = (&s.classes, &s.null_class) {
            let message = "`null_class` goes with `classes`";
            return Err(self.error(n.span(), "conditioning.null_class", message));
        }
        Ok(())
    }

    /// `max_sequence_length`: T5's tokens per prompt, from 2 (its `</s>` and one more) to 4096, with prompts.
    fn max_sequence_length(
        &self,
        s: &ConditioningSection,
    ) -> Result<Option<usize>, ExperimentError> {
        let Some(n) = &s.max_sequence_length else {
            return Ok(None);
        };
        let key = "conditioning.max_sequence_length";
        if s.prompts.is_none() {
            return Err(self.error(n.span(), key, "max_sequence_length goes with `prompts`"));
        }
        if !(2..=4096).contains(n.get_ref()) {
            let message = "T5's or Gemma's tokens per prompt, from 2 to 4096 (SD3 uses 256, Flux 512, Sana 300)";
            return Err(self.error(n.span(), key, message));
        }
        Ok(Some(*n.get_ref()))
    }

    /// `complex_human_instruction`: goes with prompts; a list has at least one line.
    fn complex_human_instruction(
        &self,
        s: &ConditioningSection,
    ) -> Result<Option<HumanInstruction>, ExperimentError> {
        let Some(i) = &s.complex_human_instruction else {
            return Ok(None);
        };
        let key = "conditioning.complex_human_instruction";
        if s.prompts.is_none() {
            let message = "complex_human_instruction goes with `prompts`";
            return Err(self.error(i.span(), key, message));
        }
        Ok(Some(match i.get_ref() {
            Instruction::On(true) => HumanInstruction::PipelineDefault,
            Instruction::On(false) => HumanInstruction::Off,
            Instruction::Lines(lines) if lines.is_empty() => {
                let message = "list at least one line, or write false for no instruction";
                return Err(self.error(i.span(), key, message));
            }
            Instruction::Lines(lines) => HumanInstruction::Lines(lines.clone()),
        }))
    }

    /// `classes` and `null_class`: labels are ≥ 0, and a list has at least one.
    fn classes(&self, s: &ConditioningSection) -> Result<Vec<i64>, ExperimentError> {
        if let Some(n) = s.null_class.as_ref().filter(|n| *n.get_ref() < 0) {
            let message = "a class label must be ≥ 0";
            return Err(self.error(n.span(), "conditioning.null_class", message));
        }
        let Some(list) = &s.classes else {
            return Ok(Vec::new());
        };
        if list.get_ref().is_empty() {
            let message = "list at least one class";
            return Err(self.error(list.span(), "conditioning.classes", message));
        }
        if let Some(c) = list.get_ref().iter().find(|c| *c.get_ref() < 0) {
            let message = "a class label must be ≥ 0";
            return Err(self.error(c.span(), "conditioning.classes", message));
        }
        Ok(list.get_ref().iter().map(|c| *c.get_ref()).collect())
    }
}
