//! Offline evaluation: replaying recorded outcomes through the very code the server runs.

pub mod cascade;
pub mod classify;
pub mod commands;
pub mod data;
pub mod dataset;
pub mod datasets;
pub mod import;
pub mod metrics;
pub mod offsets;
pub mod plot;
pub mod route;

/// An error in an input file, naming the file, the line and the field.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{file}:{line}: field {field:?}: {message}")]
    Field {
        file: String,
        line: u64,
        field: String,
        message: String,
    },
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}
