//! Errors (config time), the two local-reply errors (request time) and warnings.

use std::fmt;

/// What went wrong while loading a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration bytes are not UTF-8.
    InvalidUtf8,
    /// The configuration is not the expected JSON.
    InvalidJson,
    /// A field has a value that is not allowed (e.g. an invalid header name).
    InvalidValue,
    /// A template does not compile.
    Template,
    /// An Envoy command operator (`%...%`) is unknown or malformed.
    Operator,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidUtf8 => "invalid utf-8",
            ErrorKind::InvalidJson => "invalid json",
            ErrorKind::InvalidValue => "invalid value",
            ErrorKind::Template => "invalid template",
            ErrorKind::Operator => "invalid command operator",
        }
    }
}

/// A configuration error: kind, message and, when known, where (a field path such as
/// `response.set[1].value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    location: Option<String>,
    position: Option<TemplatePosition>,
}

/// Where inside a value's text a template error is: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplatePosition {
    pub line: usize,
    pub column: usize,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            location: None,
            position: None,
        }
    }

    pub(crate) fn with_position(mut self, position: Option<TemplatePosition>) -> Error {
        self.position = position;
        self
    }

    /// For a template that does not compile: the line and column of the problem inside the
    /// value's text, when the template engine reports one.
    pub fn template_position(&self) -> Option<TemplatePosition> {
        self.position
    }

    pub(crate) fn at(mut self, location: impl Into<String>) -> Error {
        self.location = Some(location.into());
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The field path (e.g. `request.body.value`), if the error belongs to a field.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{} at {}: {}", self.kind.as_str(), loc, self.message),
            None => write!(f, "{}: {}", self.kind.as_str(), self.message),
        }
    }
}

impl std::error::Error for Error {}

/// An error that must end the stream with a local reply (status 400, no body), exactly as
/// kgateway does. [`ApplyError::details`] is the response-code details string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// A template uses a variable that is neither a function nor a key of a JSON body
    /// (because the body was not parsed as JSON).
    UndeclaredJsonVariables { field: String, names: Vec<String> },
    /// `parseAs: AsJson` and the body is not valid JSON (or nests too deeply).
    JsonParse { message: String },
}

impl ApplyError {
    pub const UNDECLARED_DETAILS: &'static str =
        "undeclared json variables in transformation template";
    pub const JSON_DETAILS: &'static str = "json parsing error in transformation template";

    /// The HTTP status of the local reply.
    pub fn status(&self) -> u32 {
        400
    }

    /// The response-code details of the local reply.
    pub fn details(&self) -> &'static str {
        match self {
            ApplyError::UndeclaredJsonVariables { .. } => Self::UNDECLARED_DETAILS,
            ApplyError::JsonParse { .. } => Self::JSON_DETAILS,
        }
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::UndeclaredJsonVariables { field, names } => write!(
                f,
                "undeclared json variables {names:?} in {field} (body not parsed as JSON)"
            ),
            ApplyError::JsonParse { message } => write!(f, "json parsing error: {message}"),
        }
    }
}

impl std::error::Error for ApplyError {}

/// Why a single value was not applied; the transformation went on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// The template failed to render (the header was removed / skipped, the body emptied).
    Render,
    /// The render budget (fuel or output size) was exceeded; handled like a render error.
    Budget,
    /// A rendered header value held CR, LF or NUL; it was not emitted.
    InvalidHeaderValue,
}

/// A problem with one value, for the caller to log (and count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub kind: WarningKind,
    /// Field path, e.g. `response.set[0].value`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
