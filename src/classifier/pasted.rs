//! The request around a pasted text.
//!
//! "Pull out the dates from this email", "label each of these messages", "what did they decide,
//! in a few lines?": a prompt that pastes a letter, minutes or a list of reviews is mostly the
//! pasted text, and read whole its pooled vectors and bags say what the text is about, not what
//! is asked of it. Read whole, the model called most such extraction, classification and
//! summarisation requests `closed_qa`, the intent whose training prompts (PubMedQA's abstracts
//! with a question after them) are likewise mostly a given text. The classifier therefore also
//! reads the paragraphs around the pasted text alone and pools their intent with the whole
//! reading's ([`super::Classifier::classify_chat_unchecked`]), as it pools a chat's last turn.
//!
//! What counts as pasted is kept simple, and cheap enough for every request: a prompt of at
//! least [`MIN_CHARS`] characters, in two or more paragraphs (split at blank lines), one of which
//! holds at least [`MIN_SHARE`] of the prompt's characters. That paragraph is the pasted text;
//! the others, in order, are the request. A prompt that quotes its text on the same line as the
//! question, or pastes it in many short paragraphs none of which dominates, is read once, whole.

/// A prompt shorter than this (in characters) is read once: a short prompt's request is most
/// of it, and the first and last tokens the model pools already hold it.
pub const MIN_CHARS: usize = 300;

/// The share of a prompt's characters its longest paragraph must hold to be read as pasted.
pub const MIN_SHARE: f32 = 0.5;

/// The request around a pasted text in `text`: every paragraph but the longest, joined by blank
/// lines, when `text` is long enough and one paragraph dominates it (module docs); `None`
/// otherwise.
pub fn request_around(text: &str) -> Option<String> {
    let chars = text.chars().count();
    if chars < MIN_CHARS {
        return None;
    }
    let paragraphs = paragraphs(text);
    if paragraphs.len() < 2 {
        return None;
    }
    let (longest, size) = paragraphs
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.chars().count()))
        .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))?;
    if (size as f32) < MIN_SHARE * chars as f32 {
        return None;
    }
    let request: Vec<&str> = paragraphs
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != longest)
        .map(|(_, p)| *p)
        .collect();
    Some(request.join("\n\n"))
}

/// The paragraphs of `text`: runs of lines with some non-whitespace, split at lines that hold
/// none, each trimmed.
fn paragraphs(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut end = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim().is_empty() {
            if let Some(s) = start.take() {
                out.push(text[s..end].trim());
            }
        } else {
            start.get_or_insert(at);
            end = at + line.len();
        }
        at += line.len();
    }
    if let Some(s) = start {
        out.push(text[s..end].trim());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LETTER: &str = "'Dear Mr and Mrs Adeyemi, we write under the Party Wall etc. Act 1996 \
        to give notice that our clients intend to build a single-storey rear extension. The \
        works include cutting into the party wall to insert steel beams and excavating within \
        three metres of your property to a depth below your foundations. If you do not consent \
        in writing within 14 days, a dispute will be deemed to have arisen, and we would ask \
        you to appoint a surveyor.'";

    #[test]
    fn the_request_is_every_paragraph_but_the_pasted_one() {
        let text = format!(
            "Our neighbours sent us this.\nI'd like the key points.\n\n{LETTER}\n  \n\nJust a few lines, please."
        );
        assert_eq!(
            request_around(&text).as_deref(),
            Some("Our neighbours sent us this.\nI'd like the key points.\n\nJust a few lines, please.")
        );
        // The request after the text alone, and Windows line ends.
        let text = format!("{LETTER}\r\n\r\nWhat do they want from us?\r\n");
        assert_eq!(
            request_around(&text).as_deref(),
            Some("What do they want from us?")
        );
    }

    #[test]
    fn a_prompt_is_read_once_when_nothing_in_it_dominates_or_it_is_short() {
        // One paragraph: nothing around it.
        assert_eq!(request_around(LETTER), None);
        // Short: under MIN_CHARS.
        assert_eq!(
            request_around("Summarise this:\n\nThe cat sat on the mat."),
            None
        );
        // Many short paragraphs, none with MIN_SHARE of the text.
        let list = (1..=12)
            .map(|i| format!("{i}. 'Message number {i} from a customer about the order.'"))
            .collect::<Vec<_>>()
            .join("\n\n");
        let text = format!("Label each of these as a complaint or a question:\n\n{list}");
        assert!(text.chars().count() >= MIN_CHARS);
        assert_eq!(request_around(&text), None);
        // Empty and whitespace alone.
        assert_eq!(request_around(""), None);
        assert_eq!(request_around(&" \n\n ".repeat(200)), None);
    }

    #[test]
    fn characters_are_counted_as_characters_and_sliced_on_their_boundaries() {
        let text = format!("Résumé ça, s'il te plaît :\n\n{}", "é".repeat(200));
        // 228 characters (432 bytes): too short to be read twice.
        assert_eq!(request_around(&text), None);
        let text = format!("Résumé ça, s'il te plaît :\n\n{}", "é".repeat(400));
        assert_eq!(
            request_around(&text).as_deref(),
            Some("Résumé ça, s'il te plaît :")
        );
        // Two paragraphs of the same size: neither holds half the prompt.
        let text = format!("{}\n\n{}", "a".repeat(300), "b".repeat(300));
        assert_eq!(request_around(&text), None);
    }
}
