//! Readers for recorded outcomes, in the formats their publishers ship.

use std::path::Path;

use super::EvalError;

/// One prompt with a cheap and a strong model's recorded answers and their correctness.
#[derive(Debug, Clone)]
pub struct AnswerPair {
    pub prompt: String,
    pub cheap_answer: String,
    pub cheap_correct: bool,
    pub strong_answer: String,
    pub strong_correct: bool,
}

fn parse_bool(file: &str, line: u64, field: &str, v: &str) -> Result<bool, EvalError> {
    match v.trim() {
        "True" | "true" | "1" => Ok(true),
        "False" | "false" | "0" => Ok(false),
        other => Err(EvalError::Field {
            file: file.into(),
            line,
            field: field.into(),
            message: format!("expected True or False, found {other:?}"),
        }),
    }
}

/// RouteLLM's response CSVs (`routellm/evals/*/responses`): `prompt`, a True/False column per
/// model, and `<model>_response` with each model's answer.
pub fn read_routellm_answers(
    path: &Path,
    cheap: &str,
    strong: &str,
) -> Result<Vec<AnswerPair>, EvalError> {
    let file = path.display().to_string();
    let mut rdr = csv::ReaderBuilder::new()
        .from_path(path)
        .map_err(|e| EvalError::File {
            file: file.clone(),
            message: e.to_string(),
        })?;
    let headers = rdr
        .headers()
        .map_err(|e| EvalError::File {
            file: file.clone(),
            message: e.to_string(),
        })?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| EvalError::File {
                file: file.clone(),
                message: format!(
                    "no column {name:?} (columns: {})",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ),
            })
    };
    let cheap_resp = format!("{cheap}_response");
    let strong_resp = format!("{strong}_response");
    let (ip, ic, is, icr, isr) = (
        col("prompt")?,
        col(cheap)?,
        col(strong)?,
        col(&cheap_resp)?,
        col(&strong_resp)?,
    );
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| EvalError::File {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        let get = |i: usize| rec.get(i).unwrap_or("");
        out.push(AnswerPair {
            prompt: get(ip).to_string(),
            cheap_answer: get(icr).to_string(),
            cheap_correct: parse_bool(&file, line, cheap, get(ic))?,
            strong_answer: get(isr).to_string(),
            strong_correct: parse_bool(&file, line, strong, get(is))?,
        });
    }
    if out.is_empty() {
        return Err(EvalError::File {
            file,
            message: "no rows".into(),
        });
    }
    Ok(out)
}

/// The same pairs from dataset records (`eval/dataset.schema.json`) whose outcomes for both
/// models carry an `answer`; a quality of 0.5 or more counts as correct.
pub fn answer_pairs(
    records: &[super::dataset::Record],
    cheap: &str,
    strong: &str,
) -> Vec<AnswerPair> {
    records
        .iter()
        .filter_map(|r| {
            let (c, s) = (r.outcomes.get(cheap)?, r.outcomes.get(strong)?);
            Some(AnswerPair {
                prompt: r.text(),
                cheap_answer: c.answer.clone()?,
                cheap_correct: c.quality? >= 0.5,
                strong_answer: s.answer.clone()?,
                strong_correct: s.quality? >= 0.5,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_names_bad_fields() {
        let dir = std::env::temp_dir().join(format!("sy-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.csv");
        std::fs::write(&p, "prompt,w,s,w_response,s_response\n\"2+2?\",True,True,\"4\nyes\",4\nq2,False,maybe,x,y\n").unwrap();
        let e = read_routellm_answers(&p, "w", "s").unwrap_err().to_string();
        assert!(
            e.ends_with(":4: field \"s\": expected True or False, found \"maybe\""),
            "{e}"
        );
        std::fs::write(
            &p,
            "prompt,w,s,w_response,s_response\n\"2+2?\",True,False,\"4\nyes\",4\n",
        )
        .unwrap();
        let rows = read_routellm_answers(&p, "w", "s").unwrap();
        assert_eq!(rows[0].cheap_answer, "4\nyes");
        assert!(rows[0].cheap_correct && !rows[0].strong_correct);
        let e = read_routellm_answers(&p, "w", "gpt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column \"gpt\""), "{e}");
    }
}
