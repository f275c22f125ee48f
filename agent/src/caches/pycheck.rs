//! Whether a `.py` file in a cache is whole, without running Python (the agent has none, and
//! must never execute what a pod wrote).
//!
//! Which `.py` files land in a cache and how: vLLM's piecewise tree holds
//! `vllm_compile_cache.py` (the index), `computation_graph.py` and `transformed_code.py`, all
//! plain `open(...,"w")` writes, not atomic (facts A, "Which writes are atomic"); Inductor's
//! generated modules are written atomically. The index is the one vLLM reads back: it is
//! `pprint.PrettyPrinter(indent=4).pformat(dict)` read with `ast.literal_eval`
//! (vllm/compilation/backends.py `save_to_file`, `initialize_cache`). So:
//!
//! - the index must be exactly one bracketed literal: `{`, balanced to its closing `}`, then
//!   only whitespace. Every proper prefix of such a text fails this, so a write cut short by a
//!   SIGKILL is always caught;
//! - any other `.py` must lex as Python at the level of brackets and strings (every bracket
//!   closed by its partner, every string terminated, no NUL, UTF-8). This catches a cut inside
//!   an expression or string but not one between two statements: such files are either written
//!   atomically (Inductor) or are vLLM's readable copies of the graph.

/// The name of vLLM's piecewise index.
pub(crate) const VLLM_INDEX: &str = "vllm_compile_cache.py";

/// Why a `.py` file is not whole, for the seal report; `None` when it is.
pub(crate) fn check(name: &str, bytes: &[u8]) -> Option<&'static str> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Some("not UTF-8");
    };
    if text.contains('\0') {
        return Some("contains NUL");
    }
    let lex = match lex(text) {
        Ok(l) => l,
        Err(why) => return Some(why),
    };
    if name == VLLM_INDEX {
        let trimmed = text.trim_start();
        if !trimmed.starts_with('{') {
            return Some("index is not a dict literal");
        }
        match lex.first_close_at_depth0 {
            Some(end) if text[end..].trim().is_empty() => {}
            _ => return Some("index has text after its dict literal"),
        }
    }
    None
}

struct Lexed {
    /// Byte offset just past the first bracket that brought the depth back to zero.
    first_close_at_depth0: Option<usize>,
}

fn lex(text: &str) -> Result<Lexed, &'static str> {
    let b = text.as_bytes();
    let mut stack: Vec<u8> = Vec::new();
    let mut first_close = None;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'\\' => {
                // A line continuation: skip the newline.
                i += 2;
                continue;
            }
            q @ (b'\'' | b'"') => {
                i = string_end(b, i, q)?;
                continue;
            }
            open @ (b'(' | b'[' | b'{') => stack.push(open),
            close @ (b')' | b']' | b'}') => {
                let want = match close {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                if stack.pop() != Some(want) {
                    return Err("unbalanced brackets");
                }
                if stack.is_empty() && first_close.is_none() {
                    first_close = Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    if !stack.is_empty() {
        return Err("unclosed bracket (cut short?)");
    }
    Ok(Lexed {
        first_close_at_depth0: first_close,
    })
}

/// The offset past the string starting with quote `q` at `start`; an error when it never ends.
/// A backslash always skips the next byte (in raw strings too, where `\"` does not end it).
fn string_end(b: &[u8], start: usize, q: u8) -> Result<usize, &'static str> {
    let triple = b.len() >= start + 3 && b[start + 1] == q && b[start + 2] == q;
    let mut i = start + if triple { 3 } else { 1 };
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            c if c == q && !triple => return Ok(i + 1),
            c if c == q && b.len() >= i + 3 && b[i + 1] == q && b[i + 2] == q => return Ok(i + 3),
            b'\n' if !triple => return Err("unterminated string"),
            _ => i += 1,
        }
    }
    Err("unterminated string (cut short?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "{   ((1, 8), 0, 'inductor_standalone'): 'artifact_compile_range_(1, 8)_subgraph_0',\n    (None, 1, 'inductor_standalone'): \"x}\"}";

    #[test]
    fn a_whole_index_passes_and_every_cut_of_it_fails() {
        assert_eq!(check(VLLM_INDEX, INDEX.as_bytes()), None);
        for cut in 0..INDEX.len() {
            assert!(
                check(VLLM_INDEX, &INDEX.as_bytes()[..cut]).is_some(),
                "prefix of {cut} bytes passed"
            );
        }
    }

    #[test]
    fn other_python_files_need_balanced_brackets_and_closed_strings() {
        let src =
            "import torch\n# a (comment\ndef f(x):\n    return torch.add(x, '''a\n)b''') # ok\n";
        assert_eq!(check("computation_graph.py", src.as_bytes()), None);
        assert!(check("computation_graph.py", b"def f(x:\n").is_some());
        assert!(check("g.py", b"s = 'abc\n").is_some());
        assert!(check("g.py", b"s = \"\"\"abc\n").is_some());
        assert!(check("g.py", b"x = (1]\n").is_some());
        assert!(check("g.py", b"x = 1\0\n").is_some());
        assert!(check("g.py", &[0xff, 0xfe]).is_some());
        assert_eq!(check("g.py", br#"s = r"a\"b" + 'it\'s'"#), None);
    }
}
