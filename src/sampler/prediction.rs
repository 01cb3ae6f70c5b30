use serde::{Deserialize, Serialize};

/// What a model's output means (diffusers' `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PredictionType {
    /// The noise that was added (epsilon).
    #[serde(rename = "epsilon")]
    Epsilon,
    /// v = sqrt(alpha_bar) * eps - sqrt(1 - alpha_bar) * x0 (Salimans & Ho).
    #[serde(rename = "v_prediction")]
    VPrediction,
    /// The clean sample x0 itself.
    #[serde(rename = "sample")]
    Sample,
}

impl PredictionType {
    pub const NAMES: [&'static str; 3] = ["epsilon", "v_prediction", "sample"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Epsilon => "epsilon",
            Self::VPrediction => "v_prediction",
            Self::Sample => "sample",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "epsilon" => Some(Self::Epsilon),
            "v_prediction" => Some(Self::VPrediction),
            "sample" => Some(Self::Sample),
            _ => None,
        }
    }
}

impl std::fmt::Display for PredictionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
