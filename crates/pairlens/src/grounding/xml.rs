//! A small XML reader for the regular, PASCAL-VOC-like annotation files of Flickr30k Entities:
//! elements, text, entities; attributes, comments, `<?…?>`, `<!DOCTYPE …>` and CDATA are
//! accepted (attributes and comments are dropped). Not a validating parser, no namespaces.

/// One element: its name, its children in order, and its own text (trimmed, entities decoded).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) children: Vec<Element>,
    pub(crate) text: String,
    /// 1-based line of the start tag.
    pub(crate) line: usize,
}

impl Element {
    /// First child named `name`.
    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children named `name`.
    pub(crate) fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn line(&self) -> usize {
        1 + self.s[..self.pos].matches('\n').count()
    }
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }
    fn err<T>(&self, msg: impl std::fmt::Display) -> Result<T, String> {
        Err(format!("line {}: {msg}", self.line()))
    }
    /// Skip past `end`, or fail naming what was left open.
    fn skip_past(&mut self, end: &str, what: &str) -> Result<(), String> {
        match self.rest().find(end) {
            Some(k) => {
                self.pos += k + end.len();
                Ok(())
            }
            None => self.err(format!("unterminated {what}")),
        }
    }
}

/// Decode `&lt; &gt; &amp; &quot; &apos; &#N; &#xN;`.
fn decode(raw: &str, line: usize) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(k) = rest.find('&') {
        out.push_str(&rest[..k]);
        let after = &rest[k + 1..];
        let Some(end) = after.find(';') else {
            return Err(format!("line {line}: `&` without a closing `;`"));
        };
        let name = &after[..end];
        let c = match name {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => {
                let code = if let Some(h) = name.strip_prefix("#x").or(name.strip_prefix("#X")) {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = name.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
            }
        };
        match c {
            Some(c) => out.push(c),
            None => return Err(format!("line {line}: unknown entity &{name};")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

/// Parse a document into its root element. Errors say the 1-based line.
pub(crate) fn parse(text: &str) -> Result<Element, String> {
    let mut c = Cursor {
        s: text.strip_prefix('\u{feff}').unwrap_or(text),
        pos: 0,
    };
    // Stack of open elements; the finished root ends up in `root`.
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let Some(k) = c.rest().find('<') else {
            if !c.rest().trim().is_empty() && stack.is_empty() {
                return c.err("text after the root element");
            }
            break;
        };
        let chunk = &c.rest()[..k];
        if let Some(top) = stack.last_mut() {
            top.text.push_str(&decode(chunk, c.line())?);
        } else if !chunk.trim().is_empty() {
            return c.err("text outside the root element");
        }
        c.pos += k;
        let rest = c.rest();
        if rest.starts_with("<?") {
            c.skip_past("?>", "processing instruction")?;
        } else if rest.starts_with("<!--") {
            c.skip_past("-->", "comment")?;
        } else if rest.starts_with("<![CDATA[") {
            let line = c.line();
            c.pos += "<![CDATA[".len();
            let Some(end) = c.rest().find("]]>") else {
                return Err(format!("line {line}: unterminated CDATA section"));
            };
            let body = c.rest()[..end].to_string();
            match stack.last_mut() {
                Some(top) => top.text.push_str(&body),
                None => return Err(format!("line {line}: CDATA outside the root element")),
            }
            c.pos += end + 3;
        } else if rest.starts_with("<!") {
            c.skip_past(">", "declaration")?;
        } else if let Some(after) = rest.strip_prefix("</") {
            let name: String = after.chars().take_while(|&ch| is_name_char(ch)).collect();
            let line = c.line();
            c.pos += 2 + name.len();
            let tail = c.rest().trim_start();
            if !tail.starts_with('>') {
                return c.err(format!("malformed end tag </{name}"));
            }
            c.pos = c.s.len() - tail.len() + 1;
            let Some(mut done) = stack.pop() else {
                return Err(format!(
                    "line {line}: end tag </{name}> without a start tag"
                ));
            };
            if done.name != name {
                return Err(format!(
                    "line {line}: end tag </{name}> does not match <{}> opened on line {}",
                    done.name, done.line
                ));
            }
            done.text = done.text.trim().to_string();
            match stack.last_mut() {
                Some(parent) => parent.children.push(done),
                None if root.is_none() => root = Some(done),
                None => return Err(format!("line {line}: a second root element")),
            }
        } else {
            let line = c.line();
            let name: String = rest[1..]
                .chars()
                .take_while(|&ch| is_name_char(ch))
                .collect();
            if name.is_empty() {
                return c.err("`<` not followed by a tag name");
            }
            c.pos += 1 + name.len();
            // Attributes: skip to the closing `>`, honouring quoted values.
            let mut quote: Option<char> = None;
            let mut end = None;
            for (i, ch) in c.rest().char_indices() {
                match (quote, ch) {
                    (Some(q), ch) if ch == q => quote = None,
                    (Some(_), _) => {}
                    (None, '"' | '\'') => quote = Some(ch),
                    (None, '>') => {
                        end = Some(i);
                        break;
                    }
                    (None, '<') => break,
                    _ => {}
                }
            }
            let Some(end) = end else {
                return Err(format!("line {line}: unterminated start tag <{name}"));
            };
            let self_closing = c.rest()[..end].trim_end().ends_with('/');
            c.pos += end + 1;
            let el = Element {
                name,
                children: Vec::new(),
                text: String::new(),
                line,
            };
            if self_closing {
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None if root.is_none() => root = Some(el),
                    None => return Err(format!("line {line}: a second root element")),
                }
            } else {
                if root.is_some() && stack.is_empty() {
                    return Err(format!("line {line}: a second root element"));
                }
                stack.push(el);
            }
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!(
            "unexpected end of file: <{}> opened on line {} is not closed",
            open.name, open.line
        ));
    }
    root.ok_or_else(|| "no root element".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_text_entities_and_errors() {
        let doc = "<?xml version=\"1.0\"?>\n<!-- c -->\n<a x=\"1>2\">\n <b>t &amp; &#65;&#x42;</b>\n <b/>\n <c><![CDATA[<raw>]]></c>\n</a>\n";
        let a = parse(doc).unwrap();
        assert_eq!(a.name, "a");
        assert_eq!(a.line, 3);
        assert_eq!(a.children_named("b").count(), 2);
        assert_eq!(a.child("b").unwrap().text, "t & AB");
        assert_eq!(a.child("c").unwrap().text, "<raw>");
        assert!(parse("<a><b></a>").unwrap_err().contains("does not match"));
        assert!(parse("<a>\n<b>").unwrap_err().contains("not closed"));
        assert!(parse("<a>&nope;</a>").unwrap_err().contains("&nope;"));
        assert!(parse("<a></a><b></b>").unwrap_err().contains("second root"));
        assert!(parse("").unwrap_err().contains("no root"));
    }
}
