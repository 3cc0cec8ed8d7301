//! Candidate phrases of a paper's title and abstract: tokenisation into whitespace-separated
//! runs, the stopword list, and the two n-gram generators (edge-content and all-content).

use std::collections::HashMap;

/// Title and abstract as one text (the script's doc_text).
///
/// Both fields are trimmed first. The title, when present, is closed with a full stop unless it
/// already ends in `.`, `!` or `?`, and joined to the abstract by a newline, so that no phrase
/// runs from the title into the abstract. An empty title gives the abstract alone.
pub fn document_text(title: &str, abstract_text: &str) -> String {
    let title = title.trim_matches(is_space);
    let abstract_text = abstract_text.trim_matches(is_space);
    if title.is_empty() {
        return abstract_text.to_owned();
    }
    let stop = if title.ends_with(['.', '!', '?']) { "" } else { "." };
    format!("{title}{stop}\n{abstract_text}")
}

/// Whitespace as Python's `str.isspace` sees it (Unicode White_Space plus the four ASCII
/// information separators U+001C..U+001F).
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A character of a word: letter or number, as Python's `str.isalnum` sees it.
///
/// Rust's `is_alphanumeric` also accepts the characters of Unicode's Other_Alphabetic
/// property; the circled and squared Latin letters among them ("ⓡ") are symbols to Python and
/// are excluded here. The rest of that property (combining vowel signs of Indic and other
/// scripts) still counts as a word character here but not in Python.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !is_letter_symbol(c)
}

/// Circled, squared and negative Latin letters (ⓐ, Ⓐ, 🄰, 🅐, 🅰): alphabetic
/// to Rust, symbols (So) to Python.
fn is_letter_symbol(c: char) -> bool {
    matches!(c, '\u{24B6}'..='\u{24E9}' | '\u{1F130}'..='\u{1F149}' | '\u{1F150}'..='\u{1F169}' | '\u{1F170}'..='\u{1F189}')
}

/// A letter in the sense of Python's `str.isalpha`: alphabetic, not a letter-like number
/// (Roman numerals such as "ⅱ" are alphabetic to Rust only).
fn is_letter(c: char) -> bool {
    c.is_alphabetic() && !c.is_numeric() && !is_letter_symbol(c)
}

/// Characters that join two word-character runs into one token ("x-ray", "alzheimer's",
/// "3.5", "tio2/graphene"). A joiner needs a word character after it, so "c++" gives "c".
fn is_joiner(c: char) -> bool {
    matches!(c, '-' | '\'' | '\u{2019}' | '.' | '/' | '+')
}

/// Byte ranges of the tokens of `text`: a run of word characters, extended by every joiner
/// that is directly followed by another run of word characters.
fn token_spans(text: &str) -> Vec<(usize, usize)> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end_of = |i: usize| chars.get(i).map_or(text.len(), |&(b, _)| b);
    let is_word_at = |i: usize| chars.get(i).is_some_and(|&(_, c)| is_word_char(c));
    let mut spans = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !is_word_at(i) {
            i += 1;
            continue;
        }
        let start = i;
        while is_word_at(i) {
            i += 1;
        }
        while i < chars.len() && is_joiner(chars[i].1) && is_word_at(i + 1) {
            i += 1;
            while is_word_at(i) {
                i += 1;
            }
        }
        spans.push((end_of(start), end_of(i)));
    }
    spans
}

/// Runs of lowercase tokens separated only by whitespace.
///
/// A token is a run of letters and digits, possibly joined by `-`, `'`, `’`, `.`, `/` or `+`
/// to further such runs. Anything else between two tokens (punctuation, brackets, a lone
/// joiner) ends the run, so no candidate phrase crosses it.
pub fn segments(text: &str) -> Vec<Vec<String>> {
    let mut segs = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut last_end: Option<usize> = None;
    for (start, end) in token_spans(text) {
        if let Some(prev) = last_end
            && !text[prev..start].chars().all(is_space)
            && !current.is_empty()
        {
            segs.push(std::mem::take(&mut current));
        }
        current.push(text[start..end].to_lowercase());
        last_end = Some(end);
    }
    if !current.is_empty() {
        segs.push(current);
    }
    segs
}

/// Whether `token` (lowercase) is an English stopword: scikit-learn's `ENGLISH_STOP_WORDS`
/// plus the abbreviations "e.g", "i.e", "et", "al", "etc", "vs" and "viz".
pub fn is_stopword(token: &str) -> bool {
    STOPWORDS.binary_search(&token).is_ok()
}

/// A content word: not a stopword, has a letter, more than one char.
pub fn is_content_word(token: &str) -> bool {
    !is_stopword(token) && token.chars().any(is_letter) && token.chars().nth(1).is_some()
}

/// Candidate phrases in first-occurrence order with their counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidates {
    /// Distinct phrases (tokens joined by one space) in order of first occurrence.
    pub phrases: Vec<String>,
    /// `counts[i]`: how often `phrases[i]` occurs in the text.
    pub counts: Vec<usize>,
}

impl Candidates {
    /// n-grams of 1..=`max_ngram` tokens within one segment whose first and last tokens are
    /// content words (stopwords may stand inside: "quality of life").
    pub fn edge(text: &str, max_ngram: usize) -> Self {
        let mut out = Builder::default();
        for seg in segments(text) {
            for i in 0..seg.len() {
                if !is_content_word(&seg[i]) {
                    continue;
                }
                for n in 1..=max_ngram.min(seg.len() - i) {
                    if is_content_word(&seg[i + n - 1]) {
                        out.add(&seg[i..i + n]);
                    }
                }
            }
        }
        out.finish()
    }

    /// n-grams of 1..=`max_ngram` tokens within one segment made of content words only
    /// (pke-style tf-idf candidates).
    pub fn clean(text: &str, max_ngram: usize) -> Self {
        let mut out = Builder::default();
        for seg in segments(text) {
            let content: Vec<bool> = seg.iter().map(|t| is_content_word(t)).collect();
            for i in 0..seg.len() {
                for n in 1..=max_ngram.min(seg.len() - i) {
                    if !content[i + n - 1] || !content[i..i + n].iter().all(|&c| c) {
                        break;
                    }
                    out.add(&seg[i..i + n]);
                }
            }
        }
        out.finish()
    }

    /// Number of distinct phrases.
    pub fn len(&self) -> usize {
        self.phrases.len()
    }

    /// Whether there is no phrase.
    pub fn is_empty(&self) -> bool {
        self.phrases.is_empty()
    }
}

/// Collects phrases in first-occurrence order and counts them.
#[derive(Default)]
struct Builder {
    index: HashMap<String, usize>,
    out: Candidates,
}

impl Builder {
    fn add(&mut self, tokens: &[String]) {
        let phrase = tokens.join(" ");
        match self.index.get(&phrase) {
            Some(&i) => self.out.counts[i] += 1,
            None => {
                self.index.insert(phrase.clone(), self.out.phrases.len());
                self.out.phrases.push(phrase);
                self.out.counts.push(1);
            }
        }
    }

    fn finish(self) -> Candidates {
        self.out
    }
}

/// scikit-learn's `ENGLISH_STOP_WORDS` (scikit-learn 1.9.1) with "e.g", "i.e", "et", "al",
/// "etc", "vs" and "viz" added, sorted for binary search.
#[rustfmt::skip]
const STOPWORDS: [&str; 324] = [
    "a", "about", "above", "across", "after", "afterwards", "again", "against", "al", "all",
    "almost", "alone", "along", "already", "also", "although", "always", "am", "among",
    "amongst", "amoungst", "amount", "an", "and", "another", "any", "anyhow", "anyone",
    "anything", "anyway", "anywhere", "are", "around", "as", "at", "back", "be", "became",
    "because", "become", "becomes", "becoming", "been", "before", "beforehand", "behind",
    "being", "below", "beside", "besides", "between", "beyond", "bill", "both", "bottom", "but",
    "by", "call", "can", "cannot", "cant", "co", "con", "could", "couldnt", "cry", "de",
    "describe", "detail", "do", "done", "down", "due", "during", "e.g", "each", "eg", "eight",
    "either", "eleven", "else", "elsewhere", "empty", "enough", "et", "etc", "even", "ever",
    "every", "everyone", "everything", "everywhere", "except", "few", "fifteen", "fifty",
    "fill", "find", "fire", "first", "five", "for", "former", "formerly", "forty", "found",
    "four", "from", "front", "full", "further", "get", "give", "go", "had", "has", "hasnt",
    "have", "he", "hence", "her", "here", "hereafter", "hereby", "herein", "hereupon", "hers",
    "herself", "him", "himself", "his", "how", "however", "hundred", "i", "i.e", "ie", "if",
    "in", "inc", "indeed", "interest", "into", "is", "it", "its", "itself", "keep", "last",
    "latter", "latterly", "least", "less", "ltd", "made", "many", "may", "me", "meanwhile",
    "might", "mill", "mine", "more", "moreover", "most", "mostly", "move", "much", "must", "my",
    "myself", "name", "namely", "neither", "never", "nevertheless", "next", "nine", "no",
    "nobody", "none", "noone", "nor", "not", "nothing", "now", "nowhere", "of", "off", "often",
    "on", "once", "one", "only", "onto", "or", "other", "others", "otherwise", "our", "ours",
    "ourselves", "out", "over", "own", "part", "per", "perhaps", "please", "put", "rather",
    "re", "same", "see", "seem", "seemed", "seeming", "seems", "serious", "several", "she",
    "should", "show", "side", "since", "sincere", "six", "sixty", "so", "some", "somehow",
    "someone", "something", "sometime", "sometimes", "somewhere", "still", "such", "system",
    "take", "ten", "than", "that", "the", "their", "them", "themselves", "then", "thence",
    "there", "thereafter", "thereby", "therefore", "therein", "thereupon", "these", "they",
    "thick", "thin", "third", "this", "those", "though", "three", "through", "throughout",
    "thru", "thus", "to", "together", "too", "top", "toward", "towards", "twelve", "twenty",
    "two", "un", "under", "until", "up", "upon", "us", "very", "via", "viz", "vs", "was", "we",
    "well", "were", "what", "whatever", "when", "whence", "whenever", "where", "whereafter",
    "whereas", "whereby", "wherein", "whereupon", "wherever", "whether", "which", "while",
    "whither", "who", "whoever", "whole", "whom", "whose", "why", "will", "with", "within",
    "without", "would", "yet", "you", "your", "yours", "yourself", "yourselves",
];

#[cfg(test)]
mod tests {
    use super::*;

    use super::segments as seg;

    #[test]
    fn document_text_closes_the_title() {
        assert_eq!(document_text(" Deep Nets ", "Body text. "), "Deep Nets.\nBody text.");
        assert_eq!(document_text("Why nets?", "Body"), "Why nets?\nBody");
        assert_eq!(document_text("", "Only body"), "Only body");
        assert_eq!(document_text("   ", ""), "");
    }

    #[test]
    fn tokens_keep_joined_words() {
        assert_eq!(
            seg("X-ray of Alzheimer's and Crohn\u{2019}s at 3.5 GHz with TiO2/graphene C+H"),
            vec![vec![
                "x-ray",
                "of",
                "alzheimer's",
                "and",
                "crohn\u{2019}s",
                "at",
                "3.5",
                "ghz",
                "with",
                "tio2/graphene",
                "c+h"
            ]]
        );
        // a joiner without a word character after it is not part of the token
        assert_eq!(seg("well- known"), vec![vec!["well"], vec!["known"]]);
        assert_eq!(seg("snake_case"), vec![vec!["snake"], vec!["case"]]);
        assert_eq!(seg("Über Café"), vec![vec!["über", "café"]]);
    }

    #[test]
    fn punctuation_breaks_segments() {
        assert_eq!(
            seg("Deep learning, (graph) networks; fast\n\tmodels. End"),
            vec![
                vec!["deep", "learning"],
                vec!["graph"],
                vec!["networks"],
                vec!["fast", "models"],
                vec!["end"]
            ]
        );
        assert_eq!(seg(" ,;. "), Vec::<Vec<&str>>::new());
        assert_eq!(seg(""), Vec::<Vec<&str>>::new());
    }

    #[test]
    fn stopwords_and_content_words() {
        assert_eq!(STOPWORDS.len(), 324);
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        for w in ["the", "of", "e.g", "i.e", "et", "al", "etc", "vs", "viz", "however"] {
            assert!(is_stopword(w), "{w}");
        }
        assert!(!is_stopword("network"));
        assert!(is_content_word("network"));
        assert!(is_content_word("3d"));
        assert!(!is_content_word("3.5"), "no letter");
        assert!(!is_content_word("x"), "one char");
        assert!(is_content_word("αβ"));
        assert!(!is_content_word("ⅱⅲ"), "Roman numerals are numbers");
        assert_eq!(seg("NPSfinderⓡ results"), vec![vec!["npsfinder"], vec!["results"]]);
        assert!(!is_content_word("the"));
    }

    #[test]
    fn edge_and_clean_candidates() {
        let text = "Quality of life in deep neural networks. Deep neural networks, again";
        let edge = Candidates::edge(text, 3);
        assert_eq!(
            edge.phrases,
            vec![
                "quality",
                "quality of life",
                "life",
                "life in deep",
                "deep",
                "deep neural",
                "deep neural networks",
                "neural",
                "neural networks",
                "networks"
            ]
        );
        assert_eq!(edge.counts, vec![1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
        let clean = Candidates::clean(text, 3);
        assert_eq!(
            clean.phrases,
            vec![
                "quality",
                "life",
                "deep",
                "deep neural",
                "deep neural networks",
                "neural",
                "neural networks",
                "networks"
            ]
        );
        assert_eq!(clean.counts, vec![1, 1, 2, 2, 2, 2, 2, 2]);
        assert_eq!(clean.len(), 8);
        // "again" is a stopword; max_ngram limits the length
        let short = Candidates::clean(text, 1);
        assert_eq!(short.phrases, vec!["quality", "life", "deep", "neural", "networks"]);
        assert!(Candidates::edge("", 3).is_empty());
        assert!(Candidates::clean("of the and", 3).is_empty());
        assert!(Candidates::clean("deep nets", 0).is_empty());
    }
}
