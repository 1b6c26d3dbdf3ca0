//! The arithmetic check: recompute the arithmetic an answer shows and reject it when a step is
//! wrong. Math answers carry their working (`3 x 60 = 180`, or calculator annotations such as
//! `<<3*60=180>>`), and a wrong step is a strong sign of a wrong answer. The scan is
//! conservative: an equation is checked only when both sides are plain arithmetic, so prose
//! around numbers (`20% of 50 = 10`, `3 sessions/week = …`) is skipped, not misread.

/// The first wrong step, e.g. `2 * 3 = 7 (is 6)`, or `None`.
pub fn first_error(text: &str) -> Option<String> {
    // Calculator annotations first: <<expr=result>>.
    let mut rest = text;
    while let Some(start) = rest.find("<<") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(">>") else { break };
        let inner = &after[..end];
        if let Some((l, r)) = inner.rsplit_once('=') {
            if let Some(e) = check(l, r) {
                return Some(e);
            }
        }
        rest = &after[end + 2..];
    }
    // Inline equations, with annotations blanked out so they are not read twice.
    let plain = strip_annotations(text);
    let bytes: Vec<char> = plain.chars().collect();
    for (i, c) in bytes.iter().enumerate() {
        if *c != '=' {
            continue;
        }
        let mut j = i;
        while j > 0 && is_expr_char(bytes[j - 1]) {
            j -= 1;
        }
        let left: String = bytes[j..i].iter().collect();
        let mut k = i + 1;
        while k < bytes.len() && bytes[k] == ' ' {
            k += 1;
        }
        if k < bytes.len() && bytes[k] == '$' {
            k += 1;
        }
        let start = k;
        while k < bytes.len()
            && (bytes[k].is_ascii_digit() || matches!(bytes[k], '.' | ',' | '/' | '-'))
        {
            k += 1;
        }
        let first: String = bytes[start..k].iter().collect();
        // The right side may itself be a step of a chain (`22 + 4 x 12 = 22 + 48 = 70`): accept
        // the equation when either its first number or its whole expression matches.
        while k < bytes.len() && is_expr_char(bytes[k]) {
            k += 1;
        }
        let whole: String = bytes[start..k].iter().collect();
        if let Some(e) = check(&left, &first) {
            if check(&left, whole.trim_end()).is_some() {
                return Some(e);
            }
        }
    }
    None
}

fn strip_annotations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<<") {
        out.push_str(&rest[..start]);
        match rest[start..].find(">>") {
            Some(end) => {
                out.push(' ');
                rest = &rest[start + end + 2..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_expr_char(c: char) -> bool {
    c.is_ascii_digit()
        || matches!(
            c,
            ' ' | '.' | ',' | '+' | '-' | '*' | '/' | 'x' | '×' | '÷' | '(' | ')' | '$'
        )
}

/// Checks `left = right` when both are plain arithmetic with at least one operation on the left.
fn check(left: &str, right: &str) -> Option<String> {
    let left = left.trim().trim_start_matches([',', '.', ' ']);
    let right = right.trim().trim_end_matches(['.', ',', '-', '/']);
    if left.is_empty() || right.is_empty() || left.contains('%') {
        return None;
    }
    let lv = eval(left)?;
    let rv = eval(right)?;
    let has_op = tokens(left)?
        .iter()
        .filter(|t| matches!(t, Tok::Op(_)))
        .count()
        >= 1;
    if !has_op || !lv.is_finite() || !rv.is_finite() {
        return None;
    }
    let tolerance = (0.01 * rv.abs()).max(0.006);
    if (lv - rv).abs() <= tolerance {
        None
    } else {
        Some(format!("{} = {} (is {})", left.trim(), right, fmt_num(lv)))
    }
}

fn fmt_num(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.4}").trim_end_matches('0').to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Num(f64),
    Op(char),
    Open,
    Close,
}

fn tokens(s: &str) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '$' => i += 1,
            '0'..='9' | '.' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == ',')
                {
                    // A comma is a thousands separator only before exactly three digits.
                    if chars[i] == ',' {
                        let digits = chars[i + 1..]
                            .iter()
                            .take_while(|c| c.is_ascii_digit())
                            .count();
                        if digits != 3 {
                            break;
                        }
                    }
                    i += 1;
                }
                let text: String = chars[start..i].iter().filter(|c| **c != ',').collect();
                out.push(Tok::Num(text.parse().ok()?));
            }
            '+' | '-' | '*' | '/' => {
                out.push(Tok::Op(c));
                i += 1;
            }
            'x' | '×' => {
                out.push(Tok::Op('*'));
                i += 1;
            }
            '÷' => {
                out.push(Tok::Op('/'));
                i += 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Evaluates `+ - * / ( )` with the usual precedence; `None` when it is not well formed.
fn eval(s: &str) -> Option<f64> {
    let toks = tokens(s)?;
    if toks.is_empty() {
        return None;
    }
    let mut pos = 0;
    let v = sum(&toks, &mut pos)?;
    (pos == toks.len()).then_some(v)
}

fn sum(t: &[Tok], pos: &mut usize) -> Option<f64> {
    let mut v = product(t, pos)?;
    while let Some(Tok::Op(op @ ('+' | '-'))) = t.get(*pos) {
        *pos += 1;
        let r = product(t, pos)?;
        v = if *op == '+' { v + r } else { v - r };
    }
    Some(v)
}

fn product(t: &[Tok], pos: &mut usize) -> Option<f64> {
    let mut v = atom(t, pos)?;
    while let Some(Tok::Op(op @ ('*' | '/'))) = t.get(*pos) {
        *pos += 1;
        let r = atom(t, pos)?;
        v = if *op == '*' { v * r } else { v / r };
    }
    Some(v)
}

fn atom(t: &[Tok], pos: &mut usize) -> Option<f64> {
    match t.get(*pos)? {
        Tok::Num(n) => {
            *pos += 1;
            Some(*n)
        }
        Tok::Op('-') => {
            *pos += 1;
            atom(t, pos).map(|v| -v)
        }
        Tok::Open => {
            *pos += 1;
            let v = sum(t, pos)?;
            (t.get(*pos) == Some(&Tok::Close)).then(|| {
                *pos += 1;
                v
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correct_working_passes() {
        for ok in [
            "So in one session, he runs 3 x 60 = <<3*60=180>>180 meters. 180 x 3 = 540.",
            "2 + 1/2 = 5/2 = 2.5 bolts",
            "Total: $1,200 + $300 = $1,500.",
            "10/3 = 3.33 each",
            "20% of 50 = 10",
            "180 meters/session * 3 sessions/week = 540 meters/week",
            "(4 + 6) * 2 = 20",
            "x = 5 and y = 7",
            "22 + 4 x 12 = 22 + 48 = 70 dollars",
        ] {
            assert_eq!(first_error(ok), None, "{ok}");
        }
    }

    #[test]
    fn wrong_steps_are_found() {
        assert_eq!(
            first_error("She pays 12 * 4 = <<12*4=46>>46 dollars"),
            Some("12*4 = 46 (is 48)".into())
        );
        assert_eq!(
            first_error("so 7 + 8 = 16 apples"),
            Some("7 + 8 = 16 (is 15)".into())
        );
        assert!(first_error("Then 1,000 - 250 = 850.").is_some());
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_cases())]
        #[test]
        fn never_panics(s in "[0-9 .,+*/x×÷()$=<>%a-z-]{0,80}") {
            let _ = first_error(&s);
        }
    }

    #[test]
    fn odd_input_does_not_panic() {
        for s in [
            "=",
            "<<",
            "<<=>>",
            "1/0 = 5",
            "((((1 = 1",
            "-- = --",
            "= = =",
            "€=€",
            "5 / = 3",
        ] {
            let _ = first_error(s);
        }
    }
}
