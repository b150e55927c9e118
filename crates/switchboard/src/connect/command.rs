//! What a line of input asks for: a message, a ping or a close (`/help` lists them).

use base64::Engine;
use switchboard_proto::{CloseCode, Message};

/// One line of input, parsed.
pub(super) enum Command {
    Send(Message),
    Ping(String),
    Close(CloseCode, String),
}

/// Parses one line of input; the error is the usage text to show.
pub(super) fn parse_command(line: &str) -> Result<Command, String> {
    if let Some(rest) = line.strip_prefix("//") {
        return Ok(Command::Send(Message::text(format!("/{rest}"))));
    }
    let Some(cmd) = line.strip_prefix('/') else {
        return Ok(Command::Send(Message::text(line.to_string())));
    };
    let mut parts = cmd.splitn(2, ' ');
    let name = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or("").trim();
    match name {
        "binary" => {
            let (enc, data) = rest.split_once(' ').unwrap_or((rest, ""));
            let bytes = match enc {
                "hex" => {
                    let clean: String = data.chars().filter(|c| !c.is_whitespace()).collect();
                    if clean.len() % 2 != 0 {
                        return Err("hex needs an even number of digits".into());
                    }
                    (0..clean.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16))
                        .collect::<Result<Vec<u8>, _>>()
                        .map_err(|e| format!("bad hex: {e}"))?
                }
                "base64" => base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| format!("bad base64: {e}"))?,
                _ => return Err("usage: /binary hex 0a0b0c  or  /binary base64 AAEC".into()),
            };
            Ok(Command::Send(Message::binary(bytes)))
        }
        "ping" => Ok(Command::Ping(rest.to_string())),
        "close" => {
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            let code = if code.is_empty() {
                CloseCode::NORMAL
            } else {
                let c: u16 = code.parse().map_err(|_| format!("bad close code {code:?}"))?;
                if !CloseCode(c).is_valid_on_wire() {
                    return Err(format!("{c} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)"));
                }
                CloseCode(c)
            };
            if reason.len() > 123 {
                return Err("the close reason is at most 123 bytes".into());
            }
            Ok(Command::Close(code, reason.to_string()))
        }
        _ => Err("commands: /binary hex|base64 DATA, /ping [text], /close [code [reason]], //text to send a line starting with '/'".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert!(matches!(
            parse_command("hi"),
            Ok(Command::Send(Message::Text(_)))
        ));
        assert!(matches!(parse_command("//x"), Ok(Command::Send(m)) if m == Message::text("/x")));
        assert!(
            matches!(parse_command("/binary hex 0a 0b"), Ok(Command::Send(m)) if m == Message::binary(vec![10, 11]))
        );
        assert!(
            matches!(parse_command("/binary base64 AAE="), Ok(Command::Send(m)) if m == Message::binary(vec![0, 1]))
        );
        assert!(
            matches!(parse_command("/close 4000 done here"), Ok(Command::Close(CloseCode(4000), r)) if r == "done here")
        );
        assert!(parse_command("/close 1006").is_err());
        assert!(parse_command("/binary hex 0").is_err());
        assert!(parse_command("/nope").is_err());
    }
}
