//! YAKE! keyword extraction (Campos et al., 2020: "YAKE! Keyword extraction from single documents using
//! multiple local features"), reproducing the Python package `yake` 0.7.3 with `lan="en"`: its segtok
//! sentence splitter and tokeniser, its English stopword list, the five term features, the phrase score
//! and the "seqm" near-duplicate filter. On the papertune keyword data sets the ranked lists and scores
//! are identical to the Python ones.
//!
//! Lower scores are better. A term scores `S(t) = T_Rel * T_Position / (T_Case + T_FNorm / T_Rel +
//! T_Sentence / T_Rel)` and a phrase `S(kw) = prod S(t) / (TF(kw) * (1 + sum S(t)))`, where a stopword
//! inside a phrase contributes through how strongly it binds its two neighbours.
//!
//! Known departures from the Python package: character classes come from the regex crate's Unicode
//! tables (newer than Python 3.11's), `html.unescape` is reproduced for numeric references and the common
//! named ones only, and `top == 0` gives an empty list (yake would return everything).

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// Options of the YAKE scorer (defaults = yake 0.7.3's with n = 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct YakeOptions {
    /// Longest candidate phrase, in words (yake's `n`).
    pub max_ngram: usize,
    /// How many preceding words count as a word's context (yake's `window_size`).
    pub window: usize,
    /// A phrase is dropped when its "seqm" similarity to a better one exceeds this (`dedup_lim`); from
    /// 1.0 up there is no filter and, as in yake, phrases come back lower-cased.
    pub dedup_threshold: f64,
}

impl Default for YakeOptions {
    fn default() -> Self {
        YakeOptions { max_ngram: 3, window: 1, dedup_threshold: 0.9 }
    }
}

/// yake's English stopword list (`StopwordsList/stopwords_en.txt`).
const STOPWORDS_EN: &str = "
dr dra mr ms a a's able about above according accordingly across actually after afterwards again against ain't
all allow allows almost alone along already also although always am among amongst an and another any anybody
anyhow anyone anything anyway anyways anywhere apart appear appreciate appropriate are aren't around as aside
ask asking associated at available away awfully b be became because become becomes becoming been before
beforehand behind being believe below beside besides best better between beyond both brief but by c c'mon c's
came can can't cannot cant cause causes certain certainly changes clearly co com come comes concerning
consequently consider considering contain containing contains corresponding could couldn't course currently d
definitely described despite did didn't different do does doesn't doing don't done down downwards during e each
edu eg eight either else elsewhere enough entirely especially et etc even ever every everybody everyone
everything everywhere ex exactly example except f far few fifth first five followed following follows for former
formerly forth four from further furthermore g get gets getting given gives go goes going gone got gotten
greetings h had hadn't happens hardly has hasn't have haven't having he he's hello help hence her here here's
hereafter hereby herein hereupon hers herself hi him himself his hither hopefully how howbeit however i i'd i'll
i'm i've ie if ignored immediate in inasmuch inc indeed indicate indicated indicates inner insofar instead into
inward is isn't it it'd it'll it's its itself j just k keep keeps kept know knows known l last lately later
latter latterly least less lest let let's like liked likely little look looking looks ltd m mainly many may
maybe me mean meanwhile merely might more moreover most mostly much must my myself n name namely nd near nearly
necessary need needs neither never nevertheless new next nine no nobody non none noone nor normally not nothing
novel now nowhere o obviously of off often oh ok okay old on once one ones only onto or other others otherwise
ought our ours ourselves out outside over overall own p particular particularly per perhaps placed please plus
possible presumably probably provides q que quite qv r rather rd re really reasonably regarding regardless
regards relatively respectively right s said same saw say saying says second secondly see seeing seem seemed
seeming seems seen self selves sensible sent serious seriously seven several shall she should shouldn't since
six so some somebody somehow someone something sometime sometimes somewhat somewhere soon sorry specified
specify specifying still sub such sup sure t t's take taken tell tends th than thank thanks thanx that that's
thats the their theirs them themselves then thence there there's thereafter thereby therefore therein theres
thereupon these they they'd they'll they're they've think third this thorough thoroughly those though three
through throughout thru thus to together too took toward towards tried tries truly try trying twice two u un
under unfortunately unless unlikely until unto up upon us use used useful uses using usually uucp v value
various very via viz vs w want wants was wasn't way we we'd we'll we're we've welcome well went were weren't
what what's whatever when whence whenever where where's whereafter whereas whereby wherein whereupon wherever
whether which while whither who who's whoever whole whom whose why will willing wish with within without won't
wonder would wouldn't x y yes yet you you'd you'll you're you've your yours yourself yourselves z zero";

/// Sentence terminals, word-joining hyphens (as a regex class body) and non-ASCII apostrophes of segtok.
const TERMINALS: &str = ".!?\u{203C}\u{203D}\u{2047}\u{2048}\u{2049}\u{3002}\u{FE52}\u{FE57}\u{FF01}\u{FF0E}\u{FF1F}\u{FF61}";
const HYPH: &str =
    r"\x{AD}\x{58A}\x{5BE}\x{F0C}\x{1400}\x{1806}\x{2010}-\x{2012}\x{2E17}\x{30A0}\-";
const APOS: &str = "\u{B4}\u{2B9}\u{2BC}\u{2019}\u{2032}";
/// segtok's abbreviations, after which a full stop ends no sentence (with its capitalised variants).
const ABBREVIATIONS: &str = r"approx Capt cf Col Dr f\.?e figs? Gen e\.?g i\.?e i\.?v Mag med Mr Mrs Mt nat No nr p\.e phil
    prof rer sci Sgt Sr Sra Srta St univ vol vs z\.B Jän Jan Ene Feb Mär Mar Apr Abr May Jun Jul Aug Sep Sept Oct
    Okt Nov Dic Dez Dec E\.U U\.K U\.S Approx Cf F\.?e Figs? E\.?g I\.?e I\.?v Med Nat Nr P\.e Phil Prof Rer Sci
    Univ Vol Vs Z\.b";

fn stopwords() -> &'static HashSet<&'static str> {
    static SW: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SW.get_or_init(|| STOPWORDS_EN.split_whitespace().collect())
}

/// Compiled patterns; all are constants, so compiling them cannot fail at run time.
struct Rx {
    marker: Regex,
    abbr: Regex,
    title_initial: Regex,
    bracket_initial: Regex,
    comma_initial: Regex,
    and_initial: Regex,
    lone_cap: Regex,
    lone_cap_or_comma: Regex,
    lone_word: Regex,
    date_end: Regex,
    month: Regex,
    middle_initial: Regex,
    upper_word: Regex,
    before_lower: Regex,
    lower_word: Regex,
    continuation: Regex,
    upper_end: Regex,
    upper_start: Regex,
    web: Regex,
    hyphen_break: Regex,
    contraction: Regex,
    entity: Regex,
    leading_capital: Regex,
    alnum: Regex,
    letter: Regex,
    number: Regex,
    word: Regex,
    alpha: Regex,
    digit: Regex,
}

fn rx() -> &'static Rx {
    static RX: OnceLock<Rx> = OnceLock::new();
    RX.get_or_init(|| {
        let r = |p: &str| Regex::new(p).expect("constant pattern compiles");
        let (t, abbr) = (TERMINALS, ABBREVIATIONS.split_whitespace().collect::<Vec<_>>().join("|"));
        let init = format!(r"(?:[\p{{Lu}}\p{{Lt}}]\p{{Lm}}?\.[{HYPH}]?)?[\p{{Lu}}\p{{Lt}}]\p{{Lm}}?$");
        let alnum = r"[\p{Ll}\p{Lm}\p{Lt}\p{Lu}\p{Nd}\p{Nl}]";
        let (path, query, fragment) = (r#"[^?#\s'">)\]}]"#, r#"[^#\s'">)\]}]"#, r#"[^\s'">)\]}]"#);
        Rx {
            marker: r(&format!(r#"[{t}]['\x{{2019}}"\x{{201D}}]?[\])]*\s+|\n{{2,}}"#)),
            abbr: r(&format!(r"(?:\b(?:{abbr})|^\S|^\d+)$")),
            title_initial: r(&format!(r"\b(?:[Bb]y|[Cc](?:aptain|ommander)|[Dd]o[ck]tor|[Gg]eneral|[Mm](?:ag)?is(?:ter|s)|[Pp]rofessor|[Ss]e\x{{F1}}or(?:it)?a?)\s{init}")),
            bracket_initial: r(&format!(r"[\[(]{init}")),
            comma_initial: r(&format!(r"(,)(?:\sand)?\s{init}")),
            and_initial: r(&format!(r"(\s)and\s{init}")),
            lone_cap: r(r"\b\p{Lu}\p{Lm}?$"),
            lone_cap_or_comma: r(r"\b[\p{Lu},]\p{Lm}?$"),
            lone_word: r(&format!(r"^\p{{Ll}}+[\p{{Ll}}\p{{Nd}}{HYPH}]*$")),
            date_end: r(r"\b[0123]?[0-9]$"),
            month: r(r"^(?:J[äa]n|Ene|Feb|M[äa]r|A[pb]r|May|Jun|Jul|Aug|Sep|O[ck]t|Nov|D[ei][cz]|0?[1-9]|1[012])"),
            middle_initial: r(r"\b\p{Lu}\p{Ll}+\W+\p{Lu}$"),
            upper_word: r(r"^\p{Lu}\p{Ll}+\b"),
            before_lower: r(&format!(r#"(?s)(?:[{t}]"[)\]]*|[{t}][)\]]+|\bspp\.|\b\p{{L}}\p{{Ll}}?\.)\s+$"#)),
            lower_word: r(&format!(r"^\p{{Ll}}+[{HYPH}]?\p{{Ll}}*\b")),
            continuation: r(r"^(?:a(?:nd|re)|b(?:etween|y)|from|has|i(?:nto|s)|o[fr]|t(?:han|hat|hrough)|via|w(?:as|ere|hether|ith))\b"),
            upper_end: r(r"\b[\p{Lu}\p{Lt}]\p{L}*\.\s+$"),
            upper_start: r(r"^(?:(?:\(\d{4}\)\s)?[\p{Lu}\p{Lt}]\p{L}*|\d+)[.,:]\s+"),
            web: r(&format!(r#"([A-z]+://(?:[^@]+@)?(?:[\w-]+\.)+\w+(?::\d+)?(?:/{path}*)?(?:\?{query}+)?(?:#{fragment}+)?|[\w.#$%&'*+/=!?^`{{|}}~-]+@(?:[\w-]+\.)+\w+)(?:[\s>"')\]}}]|$)"#)),
            hyphen_break: r(&format!(r"({alnum}[{HYPH}])[\p{{Zs}}\t]*?(?:\r\n|\n|\r|\x{{2028}})[\p{{Zs}}\t]*?({alnum})")),
            contraction: r(&format!(r"^{alnum}+(?:[{HYPH}]{alnum}+)*['{APOS}](?:d|ll|m|re|s|t|ve)$")),
            entity: r(r"&(?:#[xX]([0-9a-fA-F]{1,6});?|#([0-9]{1,7});?|(amp|AMP|lt|LT|gt|GT|quot|QUOT|nbsp);?|(apos);)"),
            leading_capital: r(r"^\s*[A-Z]"),
            alnum: r(alnum),
            letter: r(r"[\p{Ll}\p{Lm}\p{Lt}\p{Lu}]"),
            number: r(r"[\p{Nd}\p{Nl}]"),
            word: r(r"\w"),
            alpha: r(r"\p{L}"),
            digit: r(r"[\p{Nd}\x{B2}\x{B3}\x{B9}\x{1369}-\x{1371}\x{19DA}\x{2070}\x{2074}-\x{2079}\x{2080}-\x{2089}\x{2460}-\x{2468}\x{2474}-\x{247C}\x{2488}-\x{2490}\x{24EA}\x{24F5}-\x{24FD}\x{24FF}\x{2776}-\x{277E}\x{2780}-\x{2788}\x{278A}-\x{2792}\x{10A40}-\x{10A43}\x{10E60}-\x{10E68}\x{11052}-\x{1105A}\x{1F100}-\x{1F10A}]"),
        }
    })
}

// ------------------------------------------------------------------------------------------- characters

/// Membership of one character in a Unicode class, with an ASCII fast path.
fn class(c: char, ascii: fn(&char) -> bool, re: &Regex) -> bool {
    if c.is_ascii() { ascii(&c) } else { re.is_match(c.encode_utf8(&mut [0u8; 4])) }
}
fn is_alnum(c: char) -> bool {
    class(c, char::is_ascii_alphanumeric, &rx().alnum)
}
fn is_letter(c: char) -> bool {
    class(c, char::is_ascii_alphabetic, &rx().letter)
}
fn is_number(c: char) -> bool {
    class(c, char::is_ascii_digit, &rx().number)
}
fn is_word(c: char) -> bool {
    c == '_' || class(c, char::is_ascii_alphanumeric, &rx().word)
}
/// Python's `str.isalpha` and `str.isdigit` on one character.
fn py_alpha(c: char) -> bool {
    class(c, char::is_ascii_alphabetic, &rx().alpha)
}
fn py_digit(c: char) -> bool {
    class(c, char::is_ascii_digit, &rx().digit)
}
fn is_titlecase(c: char) -> bool {
    !c.is_uppercase() && !c.is_lowercase() && c.to_lowercase().ne([c])
}
fn is_hyphen(c: char) -> bool {
    "\u{AD}\u{58A}\u{5BE}\u{F0C}\u{1400}\u{1806}\u{2010}\u{2011}\u{2012}\u{2E17}\u{30A0}-"
        .contains(c)
}
fn is_apo(c: char) -> bool {
    APOS.contains(c)
}
fn is_terminal(c: char) -> bool {
    TERMINALS.contains(c)
}
fn is_subscript(c: &char) -> bool {
    ('\u{2080}'..='\u{2089}').contains(c)
}
fn char_len(s: &str) -> usize {
    s.chars().count()
}

// -------------------------------------------------------------------------------------------- sentences

/// Splits text like segtok's `split_multi`: at a terminal (with optional closing quote and brackets)
/// followed by spaces, or at a blank line, unless the text before is an abbreviation or an initial, the
/// break falls inside short brackets, or the next piece starts with a lower-case continuation word.
fn split_sentences(text: &str) -> Vec<String> {
    let rx = rx();
    let (mut spans, mut last) = (Vec::new(), 0);
    for m in rx.marker.find_iter(text) {
        spans.extend([&text[last..m.start()], m.as_str()]);
        last = m.end();
    }
    spans.push(&text[last..]);
    let (mut pieces, mut start): (Vec<String>, Option<usize>) = (Vec::new(), None);
    for pos in 0..spans.len() {
        if pos % 2 == 0 {
            start.get_or_insert(pos);
            continue;
        }
        let (prev, next, dot) = (
            spans[pos - 1],
            spans.get(pos + 1).copied().unwrap_or(""),
            spans[pos].starts_with('.'),
        );
        let join = prev.ends_with(char::is_whitespace)
            || (dot && is_abbreviation(prev))
            || (dot
                && !next.is_empty()
                && (rx.lone_word.is_match(next)
                    || (rx.date_end.is_match(prev) && rx.month.is_match(next))
                    || (rx.middle_initial.is_match(prev) && rx.upper_word.is_match(next))));
        if let Some(s) = start.filter(|_| !join) {
            pieces.push(spans[s..=pos].concat());
            start = None;
        }
    }
    pieces.extend(start.map(|s| spans[s..].concat()));
    let mut out = Vec::new();
    let mut pieces = pieces.into_iter();
    let Some(mut last) = pieces.next() else { return out };
    for cur in pieces {
        if joins_previous(&last, &cur) {
            last.push_str(&cur);
        } else {
            out.push(std::mem::replace(&mut last, cur).trim().to_string());
        }
    }
    out.push(last.trim().to_string());
    out
}

/// segtok's test for an abbreviation or a name initial ending the text before a full stop.
fn is_abbreviation(prev: &str) -> bool {
    let rx = rx();
    // author-list initials (", A." or " and A.") count unless a lone capital precedes the comma / "and"
    let initial = |re: &Regex, not_after: &Regex| {
        re.captures(prev)
            .and_then(|c| c.get(1))
            .is_some_and(|g| !not_after.is_match(&prev[..g.start()]))
    };
    rx.abbr.is_match(prev)
        || rx.title_initial.is_match(prev)
        || rx.bracket_initial.is_match(prev)
        || initial(&rx.comma_initial, &rx.lone_cap)
        || initial(&rx.and_initial, &rx.lone_cap_or_comma)
}

/// segtok's reasons to glue the next piece to the sentence so far.
fn joins_previous(last: &str, cur: &str) -> bool {
    let rx = rx();
    let short = char_len(cur) < 55 || char_len(last) < 55;
    let bracketed = |open: char, close: char| {
        short
            && is_open(last, open, close)
            && (is_not_opened(cur, open, close)
                || last.ends_with(" et al. ")
                || (rx.upper_end.is_match(last) && rx.upper_start.is_match(cur)))
    };
    (rx.before_lower.is_match(last) && rx.lower_word.is_match(cur))
        || bracketed('(', ')')
        || bracketed('[', ']')
        || rx.continuation.is_match(cur)
}

/// Does `s` end inside a bracket it opened?
fn is_open(s: &str, open: char, close: char) -> bool {
    s.find(open).is_some_and(|i| s[i..].matches(open).count() > s[i..].matches(close).count())
}

/// Does `s` start inside a bracket it closes?
fn is_not_opened(s: &str, open: char, close: char) -> bool {
    s.rfind(close).is_some_and(|j| s[..=j].matches(close).count() > s[..j].matches(open).count())
}

// ------------------------------------------------------------------------------------------------ words

/// segtok's `web_tokenizer` and `split_contractions`, less the tokens yake drops.
fn tokenize(sentence: &str) -> Vec<String> {
    let rx = rx();
    let (mut tokens, mut done, mut from) = (Vec::new(), 0, 0);
    // URLs and e-mail addresses, when they follow a space, a quote or an opening bracket, stay whole
    while let Some(c) = rx.web.captures_at(sentence, from).and_then(|c| c.get(1)) {
        if sentence[..c.start()]
            .chars()
            .next_back()
            .is_none_or(|p| p.is_whitespace() || "<\"'([{".contains(p))
        {
            tokens.extend(word_tokenize(&unescape(&sentence[done..c.start()])));
            tokens.push(c.as_str().to_string());
            (done, from) = (c.end(), c.end());
        } else {
            from = c.start() + sentence[c.start()..].chars().next().map_or(1, char::len_utf8);
        }
    }
    tokens.extend(word_tokenize(&unescape(&sentence[done..])));
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        if !rx.contraction.is_match(&t) {
            out.push(t);
            continue;
        }
        // like segtok, cut before every apostrophe-like mark, the last one taking an "n't" along
        let (cs, mut cut) = (t.chars().collect::<Vec<_>>(), t.chars().count());
        for p in (0..cs.len()).rev().filter(|&p| cs[p] == '\'' || is_apo(cs[p])) {
            cut =
                p - usize::from(p + 2 == cs.len() && cs[p + 1] == 't' && p > 0 && cs[p - 1] == 'n');
            out.push(cs[..cut].iter().collect());
        }
        out.push(cs[cut..].iter().collect());
    }
    out.retain(|w: &String| !w.is_empty() && (!w.starts_with('\'') || w.len() == 1));
    out
}

/// The character references of Python's `html.unescape` that can matter here (numeric ones and
/// `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&nbsp;`, `&apos;`).
fn unescape(s: &str) -> String {
    let named = |n: &str| match n {
        "amp" | "AMP" => 38,
        "lt" | "LT" => 60,
        "gt" | "GT" => 62,
        "quot" | "QUOT" => 34,
        _ => 160,
    };
    rx().entity
        .replace_all(s, |c: &regex::Captures| {
            let code = match (c.get(1), c.get(2), c.get(3)) {
                (Some(h), _, _) => u32::from_str_radix(h.as_str(), 16).ok(),
                (_, Some(d), _) => d.as_str().parse().ok(),
                (_, _, n) => Some(n.map_or(39, |n| named(n.as_str()))),
            };
            code.and_then(char::from_u32).unwrap_or('\u{FFFD}').to_string()
        })
        .into_owned()
}

/// segtok's `word_tokenizer` on a text without URLs.
fn word_tokenize(text: &str) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    for span in rx()
        .hyphen_break
        .replace_all(text, "${1}${2}")
        .split(char::is_whitespace)
        .filter(|s| !s.is_empty())
    {
        // maximal runs of word pieces are tokens, and so is whatever lies between them
        let (cs, mut done, mut p) = (span.chars().collect::<Vec<_>>(), 0, 0);
        let runs = formula_runs(&cs);
        while p < cs.len() {
            let mut q = p;
            while let Some(n) = piece_at(&cs, q, &runs) {
                q += n;
            }
            if q == p {
                p += 1;
                continue;
            }
            tokens.extend(
                [&cs[done..p], &cs[p..q]]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.iter().collect()),
            );
            (done, p) = (q, q);
        }
        tokens.extend((done < cs.len()).then(|| cs[done..].iter().collect()));
    }
    // a sentence terminal comes off the last of the final three tokens that starts with a letter or
    // digit or holds a terminal
    let n = tokens.len();
    if let Some(k) = (n.saturating_sub(3)..n).rev().find(|&k| {
        let w = &tokens[k];
        w.chars().next().is_some_and(|f| is_alnum(f) && !is_apo(f)) || w.chars().any(is_terminal)
    }) {
        let w: Vec<char> = tokens[k].chars().collect();
        let (first, last) = (w[0], w[w.len() - 1]);
        if w.len() > 1 && tokens[k] != "..." && (is_terminal(last) || is_terminal(first)) {
            let cut = if is_terminal(last) { w.len() - 1 } else { 1 };
            tokens[k] = w[..cut].iter().collect();
            tokens.insert(k + 1, w[cut..].iter().collect());
        }
    }
    // dangling commas, semicolons and colons become tokens of their own
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        let cs: Vec<char> = t.chars().collect();
        let end = cs.len() - cs.iter().skip(1).rev().take_while(|c| ",;:".contains(**c)).count();
        out.push(cs[..end].iter().collect());
        out.extend(cs[end..].iter().map(|c| c.to_string()));
    }
    out
}

/// Where the run of element symbols and closing brackets starting at each index ends (empty when the
/// span has no subscript digit, so that no chemical formula can match).
fn formula_runs(cs: &[char]) -> Vec<usize> {
    if !cs.iter().any(is_subscript) {
        return Vec::new();
    }
    let mut end: Vec<usize> = (0..=cs.len()).collect();
    for j in (0..cs.len()).rev() {
        if cs[j].is_ascii_uppercase() {
            end[j] = end[j + 1 + usize::from(cs.get(j + 1).is_some_and(char::is_ascii_lowercase))];
        } else if cs[j] == ')' || cs[j] == ']' {
            end[j] = end[j + 1];
        }
    }
    end
}

/// Length of the word piece at `cs[i]` (one step of segtok's word pattern), if any: a letter or digit
/// with an abbreviation dot, an inner comma, colon, hyphen or apostrophe; a lone apostrophe; a unit with
/// a power ("km²"); a chemical formula ("H₂O", "SO₄²⁻"); or a single letter or digit.
fn piece_at(cs: &[char], i: usize, runs: &[usize]) -> Option<usize> {
    let at = |k: usize| cs.get(k).copied().unwrap_or('\0');
    let c = *cs.get(i)?;
    let alnum = is_alnum(c);
    if alnum && at(i + 1) == '.' && !(at(i + 2) == '.' && at(i + 3) == '.') {
        return Some(2);
    }
    if alnum && at(i + 1) == ',' && is_alnum(at(i + 2)) {
        return Some(2);
    }
    if is_number(c) && at(i + 1) == ':' && is_number(at(i + 2)) {
        return Some(2);
    }
    if alnum && is_apo(at(i + 1)) && is_hyphen(at(i + 2)) && is_alnum(at(i + 3)) {
        return Some(3);
    }
    if alnum && is_hyphen(at(i + 1)) && is_alnum(at(i + 2)) {
        return Some(2);
    }
    if is_apo(c) && !is_apo(at(i + 1)) {
        return Some(1);
    }
    if alnum && at(i + 1) == '\'' && is_alnum(at(i + 2)) {
        return Some(2);
    }
    if c == 's' && at(i + 1) == '\'' && i + 2 == cs.len() {
        return Some(2);
    }
    if is_word(c) != (i > 0 && is_word(cs[i - 1])) {
        let rest = &cs[i..];
        if rest.last().is_some_and(|p| "\u{B9}\u{B2}\u{B3}".contains(*p)) {
            let m =
                rest.len() - 1 - usize::from(rest.len() > 1 && rest[rest.len() - 2] == '\u{207B}');
            if (1..=4).contains(&m)
                && (m < 4 || "yzafpn\u{B5}mcdhkMGTPEZY".contains(rest[0]))
                && rest[..m].iter().all(|&l| is_letter(l))
            {
                return Some(rest.len());
            }
        }
        if let Some(&j) = runs.get(i).filter(|&&j| j > i) {
            let k = j + cs[j..].iter().take_while(|d| is_subscript(d)).count();
            let ion = |x: char| x == '\u{207A}' || x == '\u{207B}';
            let charge = if "\u{B2}\u{B3}".contains(at(k)) && ion(at(k + 1)) {
                2
            } else {
                usize::from(ion(at(k)))
            };
            if k > j {
                return Some(k - i + charge);
            }
        }
    }
    alnum.then_some(1)
}

/// yake's word tag: `d` number, `u` unusual (letters and digits mixed, neither, or more than one
/// punctuation mark), `a` acronym, `n` capitalised word inside a sentence, `p` anything else.
fn tag(word: &str, pos: usize) -> char {
    let all_digits = |s: &str| !s.is_empty() && s.chars().all(py_digit);
    let no_commas = word.replace(',', "");
    let count = |f: &dyn Fn(char) -> bool| word.chars().filter(|&c| f(c)).count();
    let (digits, alphas, marks) =
        (count(&py_digit), count(&py_alpha), count(&|c: char| c.is_ascii_punctuation()));
    let uppers = count(&char::is_uppercase);
    if all_digits(&no_commas) || all_digits(&no_commas.replacen('.', "", 1)) {
        'd'
    } else if (digits > 0) == (alphas > 0) || marks > 1 {
        'u'
    } else if uppers > 0 && count(&|c: char| c.is_lowercase() || is_titlecase(c)) == 0 {
        'a'
    } else if pos > 0
        && char_len(word) > 1
        && word.chars().next().is_some_and(char::is_uppercase)
        && uppers == 1
    {
        'n'
    } else {
        'p'
    }
}

// ---------------------------------------------------------------------------------------------- scoring

/// A distinct term (a lower-cased word, less a final "s" when longer than three characters): how often it
/// occurs, as an acronym and capitalised inside a sentence; whether it is a stopword; the sentences that
/// hold it (ascending); its (distinct neighbours, co-occurrences) on the left and on the right; its score.
#[derive(Default)]
struct Term {
    tf: f64,
    tf_acronym: f64,
    tf_proper: f64,
    stop: bool,
    sentences: Vec<usize>,
    left: (f64, f64),
    right: (f64, f64),
    score: f64,
}

/// A candidate (1..=n consecutive words of one sentence, not crossing punctuation): its surface form at
/// first sight, the lower-cased form that identifies it, its terms, its frequency, and whether some
/// occurrence has no number and no unusual token.
struct Candidate {
    kw: String,
    key: String,
    terms: Vec<usize>,
    tf: f64,
    clean: bool,
}

/// Keyphrases of `text`, best first (lowest YAKE score first), with their scores; at most `top`.
pub fn yake_keywords(text: &str, options: &YakeOptions, top: usize) -> Vec<(String, f64)> {
    if text.is_empty() || top == 0 {
        return Vec::new();
    }
    let flat = text.replace('\n', " ");
    let sep = if rx().leading_capital.is_match(&flat) { "\n\n" } else { " " };
    let sentences: Vec<Vec<String>> = split_sentences(&format!("{sep}{}", flat.replace('\t', " ")))
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| tokenize(s))
        .collect();
    let (mut terms, mut term_ids) = (Vec::<Term>::new(), HashMap::<String, usize>::new());
    let (mut cands, mut cand_ids) = (Vec::<Candidate>::new(), HashMap::<String, usize>::new());
    let mut edges: HashMap<(usize, usize), f64> = HashMap::new();
    for (sid, words) in sentences.iter().enumerate() {
        // the words since the last punctuation token: (word, term, neither number nor unusual)
        let mut block: Vec<(&str, usize, bool)> = Vec::new();
        for (pos, word) in words.iter().enumerate() {
            if word.chars().all(|c| c.is_ascii_punctuation()) {
                block.clear();
                continue;
            }
            let (tg, t) = (tag(word, pos), term_id(word, &mut terms, &mut term_ids));
            let term = &mut terms[t];
            term.tf += 1.0;
            term.tf_acronym += f64::from(u8::from(tg == 'a'));
            term.tf_proper += f64::from(u8::from(tg == 'n'));
            if term.sentences.last() != Some(&sid) {
                term.sentences.push(sid);
            }
            let plain = tg != 'u' && tg != 'd';
            for &(_, prev, prev_plain) in &block[block.len().saturating_sub(options.window)..] {
                if plain && prev_plain {
                    let weight = edges.entry((prev, t)).or_insert(0.0);
                    let new = f64::from(u8::from(*weight == 0.0));
                    *weight += 1.0;
                    terms[prev].right = (terms[prev].right.0 + new, terms[prev].right.1 + 1.0);
                    terms[t].left = (terms[t].left.0 + new, terms[t].left.1 + 1.0);
                }
            }
            block.push((word, t, plain));
            for len in 1..=options.max_ngram.max(1).min(block.len()) {
                let gram = &block[block.len() - len..];
                let kw = gram.iter().map(|g| g.0).collect::<Vec<_>>().join(" ");
                let (key, clean) = (kw.to_lowercase(), gram.iter().all(|g| g.2));
                if let Some(&c) = cand_ids.get(&key) {
                    cands[c].tf += 1.0;
                    cands[c].clean |= clean;
                } else {
                    cand_ids.insert(key.clone(), cands.len());
                    cands.push(Candidate {
                        kw,
                        key,
                        terms: gram.iter().map(|g| g.1).collect(),
                        tf: 1.0,
                        clean,
                    });
                }
            }
        }
    }

    // The five term features, named as in the paper.
    let tfs: Vec<f64> = terms.iter().filter(|t| !t.stop).map(|t| t.tf).collect();
    if tfs.is_empty() {
        return Vec::new();
    }
    let mean = pairwise_sum(&tfs) / tfs.len() as f64;
    let std = (pairwise_sum(&tfs.iter().map(|x| (x - mean) * (x - mean)).collect::<Vec<_>>())
        / tfs.len() as f64)
        .sqrt();
    let max_tf = terms.iter().map(|t| t.tf).fold(0.0, f64::max);
    for t in &mut terms {
        let spread =
            |(distinct, total): (f64, f64)| if total == 0.0 { 0.0 } else { distinct / total };
        // T_Rel, relatedness to context: a term next to many different words behaves like a stopword
        let rel =
            (0.5 + spread(t.left) * (t.tf / max_tf)) + (0.5 + spread(t.right) * (t.tf / max_tf));
        // T_FNorm, frequency over the mean plus one standard deviation of the non-stopword frequencies
        let freq = t.tf / (mean + std);
        // T_Sentence, the share of sentences holding the term
        let sentence = t.sentences.len() as f64 / sentences.len() as f64;
        // T_Case, how often the term is an acronym or capitalised inside a sentence
        let case = t.tf_acronym.max(t.tf_proper) / (1.0 + t.tf.ln());
        // T_Position, growing with the median index of the sentences holding the term
        let (s, m) = (&t.sentences, t.sentences.len() / 2);
        let median =
            if s.len() % 2 == 1 { s[m] as f64 } else { (s[m - 1] as f64 + s[m] as f64) / 2.0 };
        let position = (3.0 + median).ln().ln();
        t.score = (position * rel) / (case + freq / rel + sentence / rel);
    }

    // S(kw) of the candidates with a clean occurrence and no stopword at either end; a stopword inside
    // counts through P = P(stopword | word before) * P(word after | stopword), from co-occurrences.
    let mut ranked: Vec<(f64, usize)> = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        let (Some(&first), Some(&last)) = (c.terms.first(), c.terms.last()) else { continue };
        if !c.clean || terms[first].stop || terms[last].stop {
            continue;
        }
        let (mut sum, mut prod) = (0.0, 1.0);
        for (k, &t) in c.terms.iter().enumerate() {
            if !terms[t].stop {
                (sum, prod) = (sum + terms[t].score, prod * terms[t].score);
                continue;
            }
            let bind = |a: usize, b: usize, by: usize| {
                edges.get(&(a, b)).map_or(0.0, |w| w / terms[by].tf)
            };
            let before = if k > 0 { bind(c.terms[k - 1], t, c.terms[k - 1]) } else { 0.0 };
            let p = before * c.terms.get(k + 1).map_or(0.0, |&next| bind(t, next, next));
            (sum, prod) = (sum - (1.0 - p), prod * (1.0 + (1.0 - p)));
        }
        ranked.push((prod / ((sum + 1.0) * c.tf), i));
    }
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0)); // stable: ties keep the order of first occurrence
    if options.dedup_threshold >= 1.0 {
        return ranked.iter().take(top).map(|&(h, i)| (cands[i].key.clone(), h)).collect();
    }
    let mut kept: Vec<(f64, usize)> = Vec::new();
    for &(h, i) in &ranked {
        if kept
            .iter()
            .all(|&(_, j)| similarity(&cands[i].key, &cands[j].key) <= options.dedup_threshold)
        {
            kept.push((h, i));
            if kept.len() == top {
                break;
            }
        }
    }
    kept.into_iter().map(|(h, i)| (cands[i].kw.clone(), h)).collect()
}

/// The term of a word, created on first sight; it is a stopword when the word or the term is listed
/// or when fewer than three of its characters are not ASCII punctuation.
fn term_id(word: &str, terms: &mut Vec<Term>, ids: &mut HashMap<String, usize>) -> usize {
    let mut key = word.to_lowercase();
    let listed = stopwords().contains(key.as_str());
    if key.ends_with('s') && char_len(&key) > 3 {
        key.pop();
    }
    if let Some(&t) = ids.get(&key) {
        return t;
    }
    let stop = listed
        || stopwords().contains(key.as_str())
        || key.chars().filter(|c| !c.is_ascii_punctuation()).count() < 3;
    ids.insert(key, terms.len());
    terms.push(Term { stop, ..Term::default() });
    terms.len() - 1
}

/// numpy's pairwise float64 summation, so that the mean and deviation round exactly as in yake.
fn pairwise_sum(a: &[f64]) -> f64 {
    if a.len() < 8 {
        a.iter().fold(0.0, |s, x| s + x)
    } else if a.len() <= 128 {
        let (mut r, full) = ([0.0; 8], a.len() - a.len() % 8);
        r.copy_from_slice(&a[..8]);
        for chunk in a[8..full].chunks(8) {
            r.iter_mut().zip(chunk).for_each(|(acc, x)| *acc += x);
        }
        let s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        a[full..].iter().fold(s, |s, x| s + x)
    } else {
        let half = a.len() / 2 - (a.len() / 2) % 8;
        pairwise_sum(&a[..half]) + pairwise_sum(&a[half..])
    }
}

/// yake 0.7.3's "seqm" similarity: quick rejections (length, first and last character, two-letter
/// prefix, word count), then the word overlap of phrases when high, else a blend of length ratio,
/// character overlap and character-trigram overlap.
fn similarity(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let (ac, bc): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let (long, short) = (ac.len().max(bc.len()), ac.len().min(bc.len()));
    let prefix = |cs: &[char]| cs.iter().take(2).collect::<String>().to_lowercase();
    if (long - short) as f64 > long as f64 * 0.6
        || (long > 3
            && (ac.first() != bc.first()
                || ac.last() != bc.last()
                || (short >= 3 && prefix(&ac) != prefix(&bc))))
        || a.matches(' ').count().abs_diff(b.matches(' ').count()) > 1
        || (short as f64 / long as f64) < 0.3
    {
        return 0.0;
    }
    let len_ratio = short as f64 / long as f64;
    let (a, b) = (a.to_lowercase(), b.to_lowercase());
    let jaccard = |x: HashSet<String>, y: HashSet<String>| {
        let union = x.union(&y).count();
        if union == 0 { 0.0 } else { x.intersection(&y).count() as f64 / union as f64 }
    };
    let chars = |s: &str| s.chars().map(String::from).collect::<HashSet<_>>();
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<HashSet<_>>();
    let trigrams = |s: &str| {
        s.chars().collect::<Vec<_>>().windows(3).map(String::from_iter).collect::<HashSet<_>>()
    };
    let char_overlap = jaccard(chars(&a), chars(&b));
    if char_overlap < 0.2 {
        return 0.0;
    } else if long <= 4 {
        return char_overlap * len_ratio;
    }
    let word_overlap = jaccard(words(&a), words(&b));
    if (a.split_whitespace().count() > 1 || b.split_whitespace().count() > 1) && word_overlap > 0.4
    {
        return word_overlap;
    }
    (0.3 * len_ratio + 0.2 * char_overlap + 0.5 * jaccard(trigrams(&a), trigrams(&b))).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keywords(text: &str, options: &YakeOptions, top: usize) -> Vec<String> {
        yake_keywords(text, options, top).into_iter().map(|(k, _)| k).collect()
    }

    /// The expected lists and scores in these tests are what the reference implementation, the
    /// `yake` Python package 0.7.3, gives for the same text with `KeywordExtractor(lan="en",
    /// n=3, top=...)` (and `dedup_lim=1.0` where the test turns de-duplication off), and its
    /// `seqm` for the similarities; they were printed by that package and pasted here.
    #[test]
    fn repeated_capitalised_phrase_ranks_first() {
        let text = "Quantum annealing solves scheduling problems. We describe how Quantum Annealing Machines handle \
                    the scheduling of trains. Quantum Annealing Machines are fast, and scheduling with Quantum \
                    Annealing Machines is cheap.";
        let out = yake_keywords(text, &YakeOptions::default(), 10);
        let expected = [
            ("Quantum Annealing Machines", 0.005447331786919258),
            ("Quantum annealing", 0.013725524157695788), // the surface form of the first occurrence
            ("Quantum annealing solves", 0.014867962704177323),
            ("Annealing Machines", 0.017120629767283613),
            ("annealing solves scheduling", 0.029315302722707118),
            ("solves scheduling problems", 0.029553997844834198),
            ("Annealing Machines handle", 0.03389652218501852),
            ("annealing", 0.045712865801297756),
            ("annealing solves", 0.046967676215056195),
            ("Quantum", 0.07115711685785693),
        ];
        assert_eq!(out.len(), expected.len());
        for ((keyword, score), (want, want_score)) in out.iter().zip(expected) {
            assert_eq!(keyword, want);
            assert!(
                (score - want_score).abs() <= 1e-12 * want_score,
                "{keyword}: {score} vs {want_score}"
            );
        }
    }

    #[test]
    fn stopwords_never_start_or_end_a_candidate() {
        let text = "The results of the study show that the use of a model of the data is one of the best ways to \
                    learn about the structure of the graph. In the end, all of the models were trained on the data.";
        let out = keywords(text, &YakeOptions { max_ngram: 4, ..YakeOptions::default() }, 100);
        assert!(out.len() > 5);
        for kw in out {
            let words: Vec<String> = kw.split(' ').map(str::to_lowercase).collect();
            for edge in [&words[0], &words[words.len() - 1]] {
                assert!(!stopwords().contains(edge.as_str()) && edge.chars().count() >= 3, "{kw}");
            }
        }
    }

    #[test]
    fn near_duplicates_are_removed() {
        let text = "Deep learning is popular. Stacking many layers gives deep deep learning, and deep deep learning \
                    needs data. Deep learning models need data too.";
        let deduped = keywords(text, &YakeOptions::default(), 20);
        assert_eq!(deduped[..3], ["deep deep learning", "Deep", "learning"]);
        assert!(!deduped.iter().any(|k| k.eq_ignore_ascii_case("deep learning")));
        let all =
            keywords(text, &YakeOptions { dedup_threshold: 1.0, ..YakeOptions::default() }, 20);
        assert_eq!(all[..3], ["deep deep learning", "deep learning", "deep"]);
        assert_eq!(similarity("deep deep learning", "deep learning"), 1.0);
        assert_eq!(similarity("graph", "graphs"), 0.0); // a different last character rules a pair out
        assert!(
            (similarity("multi-layer perceptron", "multilayer perceptron") - 0.8593939393939394)
                .abs()
                < 1e-15
        );
    }

    #[test]
    fn sentences_and_tokens_follow_segtok() {
        let text = "See Fig. 3 for the set-up, e.g. the x-ray source. It wasn't cheap (approx. 5 km²) at \
                    http://example.org/a. and so on! Dr. No left.";
        let got: Vec<String> =
            split_sentences(text).iter().map(|s| tokenize(s).join(" ")).collect();
        assert_eq!(
            got,
            [
                "See Fig. 3 for the set-up , e.g. the x-ray source .",
                "It was n't cheap ( approx. 5 km ²) at http://example.org/a. and so on !",
                "Dr. No left .",
            ]
        );
        let got = tokenize("H₂O and CO₂ mix; 3.5% of U.S. samples, i.e. most.").join(" ");
        assert_eq!(got, "H₂O and CO₂ mix ; 3.5 % of U.S. samples , i.e. most .");
        let words = [
            ("1,000.5", 3),
            ("CO2", 1),
            ("a-b-c", 1),
            ("NASA", 0),
            ("Paris", 2),
            ("Paris", 0),
            ("iPhone", 2),
        ];
        assert_eq!(words.iter().map(|&(w, i)| tag(w, i)).collect::<String>(), "duuanpp");
    }

    #[test]
    fn odd_input_gives_nothing_and_never_panics() {
        let o = YakeOptions::default();
        for text in [
            "",
            " ",
            "\n\n\t\r",
            "!!!...???",
            "((([[",
            "&&&;",
            "1 2 3. 4,5",
            "a b c",
            "'s 't",
            "\u{0}\u{1}\u{7f}",
        ] {
            assert!(yake_keywords(text, &o, 10).is_empty(), "{text:?}");
        }
        assert!(yake_keywords("Graph models of graph models.", &o, 0).is_empty());
        let huge = "x".repeat(200_000);
        assert_eq!(keywords(&huge, &o, 5), std::slice::from_ref(&huge));
        let odd = [
            "中文文本，中文。",
            "αβγ δεζ. ",
            ")A1\u{2082} H\u{2082}O km\u{b2} ",
            "ǅemal İstanbul ΣΟΦΟΣ. ",
            "’’ ʼit's ‐ \u{2028}",
        ];
        for text in [
            odd.concat().repeat(50),
            "&#xFFFFFF; &#0; &amp".into(),
            "a.".repeat(5_000),
            ")A".repeat(9_000) + "1₂",
        ] {
            let _ = yake_keywords(&text, &o, 50);
            let _ = yake_keywords(
                &text,
                &YakeOptions { max_ngram: 0, window: 0, dedup_threshold: -1.0 },
                50,
            );
        }
        assert_eq!(
            keywords("Σ Ω. 東京 大学 東京 大学. Привет мир, привет мир!", &o, 10),
            ["Привет мир", "Привет", "мир"]
        );
    }

    #[test]
    fn options_and_sums() {
        assert_eq!(
            YakeOptions::default(),
            YakeOptions { max_ngram: 3, window: 1, dedup_threshold: 0.9 }
        );
        let text =
            "Graph neural networks learn graph structure. Graph neural networks are popular.";
        let unigrams = keywords(text, &YakeOptions { max_ngram: 1, ..YakeOptions::default() }, 10);
        assert!(!unigrams.is_empty() && unigrams.iter().all(|k| !k.contains(' ')));
        assert_eq!(keywords(text, &YakeOptions::default(), 2).len(), 2);
        let xs: Vec<f64> = (0..300).map(|i| 0.1 * f64::from(i % 7)).collect();
        assert_eq!(pairwise_sum(&xs), 89.70000000000002); // as np.add.reduce; a plain loop gives 89.69999999999996
    }
}
