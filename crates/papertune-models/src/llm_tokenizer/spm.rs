//! Gemma's SentencePiece vocabulary (GGUF `tokenizer.ggml.model = "llama"` with a Gemma
//! architecture) rebuilt as a `tokenizers` BPE model, giving the ids transformers gives when it
//! loads the same file.
//!
//! - The model: BPE over the pieces with byte fallback (`<0xNN>` pieces) and `<unk>`. GGUF keeps
//!   no merge list for SentencePiece vocabularies, so the merges are recovered from the pieces:
//!   every cut of a piece into two halves that are both pieces is a merge, ranked by the
//!   piece's position in the vocabulary, longer left halves first.
//! - Pieces made of whitespace that contain a space are stored with real spaces and looked up
//!   after the normaliser turned spaces into `▁`, so they are respelled with one `▁` per
//!   character.
//! - Normaliser: every space becomes `▁`, no space is added in front. Decoder: `▁` back to a
//!   space, byte pieces back to bytes, then the pieces joined.
//! - Control pieces (type 3) are special tokens; user-defined pieces (type 4) are added tokens,
//!   matched whole. Neither is normalised.

use std::borrow::Cow;
use std::collections::HashSet;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::Replace;
use tokenizers::{AddedToken, Tokenizer};

/// GGUF token types (`tokenizer.ggml.token_type`) that decide how a piece is registered.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// SentencePiece's word-boundary marker.
const SPACE_MARKER: &str = "\u{2581}";

/// Builds the tokenizer of a Gemma SentencePiece vocabulary: `tokens` and `token_types` indexed
/// by id (`token_types` empty when the file has none), `specials` the named special tokens
/// (BOS, EOS, unknown, padding) to register whatever their type.
pub(super) fn gemma_tokenizer(
    tokens: &[&str],
    token_types: &[i64],
    specials: &[&str],
    unk: &str,
) -> Result<Tokenizer, String> {
    if !token_types.is_empty() && token_types.len() != tokens.len() {
        return Err(format!("{} token types for {} tokens", token_types.len(), tokens.len()));
    }
    let pieces: Vec<Cow<'_, str>> = tokens.iter().map(|t| respell_blank(t)).collect();
    // Later duplicates win, as in the dictionary transformers builds from the list.
    let vocab: Vocab =
        pieces.iter().enumerate().map(|(id, piece)| (piece.to_string(), id as u32)).collect();
    let merges = recover_merges(&pieces, &vocab);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true)
        .unk_token(unk.to_owned())
        .build()
        .map_err(|e| format!("cannot build the BPE model: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_normalizer(Some(Replace::new(" ", SPACE_MARKER).map_err(|e| e.to_string())?));
    tokenizer.with_decoder(Some(DecoderSequence::new(vec![
        Replace::new(SPACE_MARKER, " ").map_err(|e| e.to_string())?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ])));
    let typed = |kind: i64| {
        tokens.iter().zip(token_types).filter(move |(_, t)| **t == kind).map(|(token, _)| *token)
    };
    let mut seen = HashSet::new();
    let special: Vec<AddedToken> = typed(CONTROL)
        .chain(specials.iter().copied())
        .filter(|token| seen.insert(*token))
        .map(|token| AddedToken::from(token.to_owned(), true).normalized(false))
        .collect();
    tokenizer.add_special_tokens(&special);
    // Respelled blank pieces are left to the BPE model: only pieces spelled as stored are added.
    let user_defined: Vec<AddedToken> = typed(USER_DEFINED)
        .filter(|token| tokenizer.token_to_id(token).is_some())
        .map(|token| AddedToken::from(token.to_owned(), false).normalized(false))
        .collect();
    tokenizer.add_tokens(&user_defined);
    Ok(tokenizer)
}

/// A piece of whitespace containing a space, spelled with one `▁` per character (Python's
/// `isspace`, which counts the separators U+001C..U+001F too).
fn respell_blank(token: &str) -> Cow<'_, str> {
    let blank = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    if token.contains(' ') && token.chars().all(blank) {
        Cow::Owned(SPACE_MARKER.repeat(token.chars().count()))
    } else {
        Cow::Borrowed(token)
    }
}

/// The merges that make each piece from two pieces, best first: by the piece's position in the
/// vocabulary, then longer left halves first. One pass over the vocabulary, already in order.
fn recover_merges(pieces: &[Cow<'_, str>], vocab: &Vocab) -> Vec<(String, String)> {
    // A piece listed twice is ranked at the position the vocabulary kept (its last).
    let duplicated = vocab.len() != pieces.len();
    let mut merges = Vec::new();
    for (position, piece) in pieces.iter().enumerate() {
        if duplicated && vocab.get(piece.as_ref()).is_some_and(|&id| id as usize != position) {
            continue;
        }
        // Cuts from the right, so that longer left halves come first; a cut before the first
        // character is not a split.
        for (cut, _) in piece.char_indices().rev().filter(|&(cut, _)| cut > 0) {
            let (left, right) = piece.split_at(cut);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                merges.push((left.to_owned(), right.to_owned()));
            }
        }
    }
    merges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_pieces_are_respelled() {
        assert_eq!(respell_blank("   "), "▁▁▁");
        assert_eq!(respell_blank(" \n"), "▁▁");
        assert_eq!(respell_blank("\n\n"), "\n\n");
        assert_eq!(respell_blank("a b"), "a b");
    }

    #[test]
    fn merges_follow_positions_then_longer_left_halves() {
        let pieces: Vec<Cow<'_, str>> =
            ["a", "b", "c", "ab", "abc", "bc"].into_iter().map(Cow::Borrowed).collect();
        let vocab: Vocab =
            pieces.iter().enumerate().map(|(i, p)| (p.to_string(), i as u32)).collect();
        let merges = recover_merges(&pieces, &vocab);
        let pairs: Vec<(&str, &str)> =
            merges.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(pairs, [("a", "b"), ("ab", "c"), ("a", "bc"), ("b", "c")]);
    }

    #[test]
    fn control_pieces_are_special_and_text_uses_byte_fallback() {
        let tokens = [
            "<pad>",
            "<eos>",
            "<bos>",
            "<unk>",
            "<start_of_turn>",
            "▁",
            "h",
            "i",
            "hi",
            "▁hi",
            "<0xC3>",
            "<0xA9>",
        ];
        let types = [3, 3, 3, 2, 3, 1, 1, 1, 1, 1, 6, 6];
        let tokenizer = gemma_tokenizer(&tokens, &types, &["<bos>", "<eos>"], "<unk>").unwrap();
        let ids = tokenizer.encode("<start_of_turn> hi é", false).unwrap().get_ids().to_vec();
        assert_eq!(ids, [4, 9, 5, 10, 11]);
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), "<start_of_turn> hi é");
        assert_eq!(tokenizer.decode(&ids, true).unwrap(), " hi é");
    }
}
