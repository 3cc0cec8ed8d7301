//! Text templates that turn a paper into model input, e.g. `"{title} [SEP] {author} [SEP] {abstract}"`.

use crate::error::{DataError, Result};
use crate::papers::PaperRecord;

/// Fields a template may name.
pub const TEMPLATE_FIELDS: [&str; 5] = ["uuid", "title", "author", "abstract", "keywords"];

/// The default classification input: the three text fields separated by BERT's separator token.
pub const DEFAULT_TEMPLATE: &str = "{title} [SEP] {author} [SEP] {abstract}";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(Field),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Uuid,
    Title,
    Author,
    Abstract,
    Keywords,
}

/// A parsed template: literal text and `{field}` placeholders; `{{` and `}}` stand for braces.
///
/// In a config it is written as its text and parsed as the config is read, so a config holds
/// it parsed and a bad template fails there, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TextTemplate {
    source: String,
    pieces: Vec<Piece>,
}

impl TextTemplate {
    /// Parses a template, failing on an unknown field or an unbalanced brace.
    pub fn parse(source: &str) -> Result<Self> {
        let error = |message: String| DataError::Template { template: source.to_owned(), message };
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let field = match name.as_str() {
                        "uuid" => Field::Uuid,
                        "title" => Field::Title,
                        "author" => Field::Author,
                        "abstract" => Field::Abstract,
                        "keywords" => Field::Keywords,
                        _ => {
                            return Err(error(format!(
                                "unknown placeholder {{{name}}}; known: {}",
                                TEMPLATE_FIELDS.map(|f| format!("{{{f}}}")).join(", ")
                            )));
                        }
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(field));
                }
                '}' => return Err(error("unmatched '}' (write '}}' for a literal brace)".into())),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        if !pieces.iter().any(|p| matches!(p, Piece::Field(_))) {
            return Err(error(
                "names no field; use at least one of {title}, {abstract}, ...".into(),
            ));
        }
        Ok(Self { source: source.to_owned(), pieces })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Fills the template from a paper.
    pub fn render(&self, paper: &PaperRecord) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Field(field) => out.push_str(match field {
                    Field::Uuid => &paper.uuid,
                    Field::Title => &paper.title,
                    Field::Author => &paper.author,
                    Field::Abstract => &paper.abstract_text,
                    Field::Keywords => paper.keywords.as_deref().unwrap_or(""),
                }),
            }
        }
        out
    }
}

impl TryFrom<String> for TextTemplate {
    type Error = DataError;

    fn try_from(source: String) -> Result<Self> {
        Self::parse(&source)
    }
}

impl From<TextTemplate> for String {
    fn from(template: TextTemplate) -> Self {
        template.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paper() -> PaperRecord {
        PaperRecord {
            title: "Title".into(),
            author: "A. Author".into(),
            abstract_text: "Abstract.".into(),
            ..Default::default()
        }
    }

    #[test]
    fn default_template_joins_fields_with_separator() {
        let template = TextTemplate::parse(DEFAULT_TEMPLATE).unwrap();
        assert_eq!(template.render(&paper()), "Title [SEP] A. Author [SEP] Abstract.");
    }

    #[test]
    fn braces_escape_and_missing_keywords_render_empty() {
        let template = TextTemplate::parse("{{x}} {title}:{keywords}|").unwrap();
        assert_eq!(template.render(&paper()), "{x} Title:|");
    }

    #[test]
    fn unknown_field_is_named() {
        let err = TextTemplate::parse("{title} {journal}").unwrap_err().to_string();
        assert!(err.contains("{journal}"), "{err}");
        assert!(err.contains("{abstract}"), "{err}");
    }

    #[test]
    fn serialises_as_its_text_and_is_parsed_when_read() {
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        struct Section {
            template: TextTemplate,
        }
        let section: Section =
            serde_json::from_str(r#"{"template": "{title}: {abstract}"}"#).unwrap();
        assert_eq!(section.template.render(&paper()), "Title: Abstract.");
        assert_eq!(
            serde_json::to_string(&section).unwrap(),
            r#"{"template":"{title}: {abstract}"}"#
        );
        let err = serde_json::from_str::<Section>(r#"{"template": "{journal}"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("{journal}"), "{err}");
    }

    #[test]
    fn template_without_field_or_with_stray_brace_fails() {
        assert!(TextTemplate::parse("just text").is_err());
        assert!(TextTemplate::parse("{title} }").is_err());
    }
}
