//! `signal-server token create`: mints a token with the server's keys and
//! prints it with a ready link to the page.
//!
//! ```text
//! $ SIGNAL_SERVER_AUTH_SECRET=... signal-server token create --room robot-7 --grant watch --ttl 2h --sub alice
//! eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIs...
//! http://localhost:9090/?token=eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIs...
//! ```
//!
//! Standard output holds exactly those two lines (or one JSON object with
//! `--json`); a sentence describing the token goes to standard error.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::args::KeyArgs;
use super::claims::{Grant, Grants};
use super::names::{RoomName, Subject};
use super::verify::{Minted, TokenRequest};

/// `token ...`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// Token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token with the server's keys (the same flags and variables as
    /// the server) and print it with a link to the page.
    Create(TokenCreateArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10m, 2h, 7d)"))
}

/// `token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The room (`[A-Za-z0-9][A-Za-z0-9._-]{0,63}`); needed by host, join
    /// and watch, optional with operator alone (then fleet-wide).
    #[arg(long)]
    pub room: Option<RoomName>,

    /// What the token allows (repeatable, or comma-separated).
    #[arg(long = "grant", value_enum, value_delimiter = ',', required = true)]
    pub grants: Vec<Grant>,

    /// How long it is valid, from now (e.g. 10m, 2h, 7d).
    #[arg(long, value_parser = duration, default_value = "1h")]
    pub ttl: Duration,

    /// Who it is for (shows in logs; tokens can be revoked by subject).
    #[arg(long, default_value = "anonymous")]
    pub sub: Subject,

    /// The page's address; the link is this with `?token=...` added.
    #[arg(
        long,
        env = "SIGNAL_SERVER_PAGE_URL",
        default_value = "http://localhost:9090/"
    )]
    pub page_url: url::Url,

    /// Print one JSON object (token, link, claims, key id) instead of lines.
    #[arg(long)]
    pub json: bool,

    /// The keys.
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// `page_url` with `token` added to its query.
pub fn page_link(page_url: &url::Url, token: &str) -> Result<url::Url, String> {
    if !matches!(page_url.scheme(), "http" | "https") {
        return Err(format!(
            "--page-url must be http:// or https://, not {page_url}"
        ));
    }
    let mut link = page_url.clone();
    let kept: Vec<(String, String)> = link
        .query_pairs()
        .filter(|(k, _)| k != "token")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = link.query_pairs_mut();
        q.clear();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        q.append_pair("token", token);
    }
    Ok(link)
}

fn describe(m: &Minted) -> String {
    let c = &m.claims;
    let room = c
        .room
        .as_ref()
        .map_or("the whole fleet".to_string(), |r| format!("room {r}"));
    let key = m
        .kid
        .as_ref()
        .map_or("the key without an id".to_string(), |k| format!("key {k}"));
    let until =
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(c.exp));
    let ttl = humantime::format_duration(Duration::from_secs(c.exp - c.iat));
    format!(
        "{} token for {room}, subject {}, jti {}, valid until {until} ({ttl}), signed {} with {key}",
        c.grants, c.sub, c.jti, m.alg
    )
}

/// Runs a `token` subcommand, printing to `out` and `err`.
pub fn run_with(args: TokenArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), String> {
    let TokenCommand::Create(args) = args.command;
    let ring = args.keys.key_ring()?;
    let grants = Grants::new(args.grants.iter().copied()).ok_or("--grant is required")?;
    if grants.need_room() && args.room.is_none() {
        return Err(format!(
            "--room is required: the {grants} grant needs a `room`"
        ));
    }
    let request = TokenRequest {
        sub: args.sub,
        room: args.room,
        grants,
        ttl: args.ttl,
    };
    let minted = ring.mint(&request).map_err(|e| e.to_string())?;
    let link = page_link(&args.page_url, &minted.token)?;
    let write = |e: std::io::Error| format!("cannot write the token: {e}");
    if args.json {
        let doc = json!({
            "token": minted.token,
            "link": link.as_str(),
            "claims": minted.claims,
            "kid": minted.kid,
            "alg": minted.alg,
        });
        writeln!(out, "{doc}").map_err(write)?;
    } else {
        writeln!(out, "{}\n{link}", minted.token).map_err(write)?;
        // Best effort: the description is for a person watching.
        let _ = writeln!(err, "{}", describe(&minted));
    }
    out.flush().map_err(write)
}

/// Runs a `token` subcommand on standard output and error.
pub fn run(args: TokenArgs) -> Result<(), String> {
    run_with(
        args,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_adds_the_token_to_the_page_query() {
        let t = "aaa.bbb.ccc";
        let base: url::Url = "http://localhost:9090/".parse().unwrap();
        assert_eq!(
            page_link(&base, t).unwrap().as_str(),
            "http://localhost:9090/?token=aaa.bbb.ccc"
        );
        let with_query: url::Url = "https://robots.example.com/view?lang=en&token=old#top"
            .parse()
            .unwrap();
        assert_eq!(
            page_link(&with_query, t).unwrap().as_str(),
            "https://robots.example.com/view?lang=en&token=aaa.bbb.ccc#top"
        );
        let ftp: url::Url = "ftp://example.com/".parse().unwrap();
        assert!(page_link(&ftp, t).is_err());
    }
}
