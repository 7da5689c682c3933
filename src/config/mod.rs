//! The model configuration: reading it, completing it from the model, checking it against the
//! model, and the session settings it asks for.

pub mod autocomplete;
pub mod check;
pub mod cuda;
pub mod genai;
pub mod generator;
pub mod model_config;
pub mod params;
pub mod ragged;
pub mod sequence;
