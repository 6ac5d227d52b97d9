//! FETCH, STORE and EXPUNGE with their tagged answer checked.
//!
//! async-imap's streams for these commands end at the command's tagged
//! answer whatever it says, and at the end of the connection too: a `NO`
//! (a server that cannot serve a message just now, a listing it cut
//! short, a store refused on a read-only mailbox) or a dropped connection
//! looked like a complete, maybe empty, answer. A message the server did
//! not give was then taken for expunged and passed over for good. These
//! read the responses themselves and fail unless the answer is `OK`.

use async_imap::error::{Error, Result};
use async_imap::imap_proto::{AttributeValue, MailboxDatum, Response, Status};

use super::conn::ImapSession;

/// What one FETCH response said of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Fetched {
    pub uid: Option<u32>,
    pub size: Option<u32>,
    pub seen: bool,
    pub deleted: bool,
    /// The whole message (`BODY[]`), when asked for and given.
    pub body: Option<Vec<u8>>,
}

impl Fetched {
    fn of(attrs: &[AttributeValue<'_>]) -> Fetched {
        let mut f = Fetched::default();
        for attr in attrs {
            match attr {
                AttributeValue::Uid(uid) => f.uid = Some(*uid),
                AttributeValue::Rfc822Size(size) => f.size = Some(*size),
                AttributeValue::Flags(flags) => {
                    f.seen |= flags.iter().any(|x| x.eq_ignore_ascii_case("\\Seen"));
                    f.deleted |= flags.iter().any(|x| x.eq_ignore_ascii_case("\\Deleted"));
                }
                AttributeValue::BodySection {
                    section: None,
                    data: Some(data),
                    ..
                } => f.body = Some(data.to_vec()),
                _ => {}
            }
        }
        f
    }
}

/// `UID FETCH <set> <query>`: the FETCH responses, once the server
/// answered `OK`.
pub(super) async fn uid_fetch(
    session: &mut ImapSession,
    set: &str,
    query: &str,
) -> Result<Vec<Fetched>> {
    uid_fetch_noting(session, set, query)
        .await
        .map(|(fetched, _)| fetched)
}

/// [`uid_fetch`], and the mailbox's size if the server announced it
/// meanwhile (an untagged `EXISTS`, the last one): the session's own queue
/// of unsolicited responses never sees those read here, so a listing that
/// found nothing while a mail arrived would otherwise wait for the next
/// poll.
pub(super) async fn uid_fetch_noting(
    session: &mut ImapSession,
    set: &str,
    query: &str,
) -> Result<(Vec<Fetched>, Option<u32>)> {
    let mut fetched = Vec::new();
    let exists = answer(session, &format!("UID FETCH {set} {query}"), |r| {
        if let Response::Fetch(_, attrs) = r {
            fetched.push(Fetched::of(attrs));
        }
    })
    .await?;
    Ok((fetched, exists))
}

/// `UID SEARCH <criteria>`: the UIDs found, once the server answered `OK`
/// (async-imap's own takes a `NO` for an empty answer).
pub(super) async fn uid_search(session: &mut ImapSession, criteria: &str) -> Result<Vec<u32>> {
    let mut uids = Vec::new();
    answer(session, &format!("UID SEARCH {criteria}"), |r| {
        if let Response::MailboxData(MailboxDatum::Search(found)) = r {
            uids.extend_from_slice(found);
        }
    })
    .await?;
    Ok(uids)
}

/// Runs `command`, hands each untagged response to `data`, and fails
/// unless the tagged answer is `OK`; the mailbox's size if the server
/// announced it meanwhile.
async fn answer(
    session: &mut ImapSession,
    command: &str,
    mut data: impl FnMut(&Response<'_>),
) -> Result<Option<u32>> {
    let id = session.run_command(command).await?;
    let mut exists = None;
    loop {
        let Some(response) = session.read_response().await? else {
            return Err(Error::ConnectionLost);
        };
        match response.parsed() {
            Response::Done {
                tag,
                status,
                information,
                ..
            } if *tag == id => {
                let text = information.as_deref().unwrap_or_default().to_owned();
                return match status {
                    Status::Ok => Ok(exists),
                    Status::No => Err(Error::No(text)),
                    _ => Err(Error::Bad(text)),
                };
            }
            Response::Data {
                status: Status::Bye,
                ..
            } => return Err(Error::ConnectionLost),
            Response::MailboxData(MailboxDatum::Exists(n)) => exists = Some(*n),
            // The command's data, or unsolicited (EXPUNGE, another
            // command's answer).
            other => data(other),
        }
    }
}

/// Runs `command` and fails unless its answer is `OK` (async-imap checks
/// this one itself).
pub(super) async fn ok(session: &mut ImapSession, command: &str) -> Result<()> {
    session.run_command_and_check_ok(command).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! Against a scripted server on a local socket: the answers a real
    //! server gives only when it fails (a NO to a FETCH, a connection
    //! closing in the middle of one), which Dovecot cannot be made to give
    //! on demand. The normal answers are covered against Dovecot
    //! (`imap/tests`).
    use super::*;
    use crate::imap::conn::Stream;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A session whose server answers each command's tag with `script`
    /// (`{tag}` stands for the tag; `None` closes the connection).
    async fn session(script: Vec<Option<&'static str>>) -> ImapSession {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"* OK ready\r\n").await.unwrap();
            // LOGIN first.
            let login = lines.next_line().await.unwrap().unwrap();
            let tag = login.split(' ').next().unwrap().to_owned();
            write
                .write_all(format!("{tag} OK logged in\r\n").as_bytes())
                .await
                .unwrap();
            for answer in script {
                let Ok(Some(line)) = lines.next_line().await else {
                    return;
                };
                let tag = line.split(' ').next().unwrap().to_owned();
                match answer {
                    Some(a) => write
                        .write_all(a.replace("{tag}", &tag).as_bytes())
                        .await
                        .unwrap(),
                    None => return,
                }
            }
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut client = async_imap::Client::new(Stream::Plain(tcp));
        client.read_response().await.unwrap();
        client.login("u", "p").await.map_err(|(e, _)| e).unwrap()
    }

    #[tokio::test]
    async fn an_answer_is_taken_only_when_the_server_says_ok() {
        let body = "Subject: x\r\n\r\nhi\r\n";
        let ok = Box::leak(
            format!(
                "* 1 FETCH (UID 5 FLAGS (\\Seen) BODY[] {{{}}}\r\n{body})\r\n{{tag}} OK done\r\n",
                body.len()
            )
            .into_boxed_str(),
        );
        let mut s = session(vec![
            Some(ok),
            // Cut short: what came is not the answer.
            Some("* 1 FETCH (UID 5 RFC822.SIZE 10)\r\n{tag} NO Some messages could not be FETCHed\r\n"),
            // The server goes away in the middle.
            Some("* BYE shutting down\r\n"),
        ])
        .await;
        let got = uid_fetch(&mut s, "5", "BODY.PEEK[]").await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].uid, Some(5));
        assert!(got[0].seen && !got[0].deleted);
        assert_eq!(got[0].body.as_deref(), Some(body.as_bytes()));
        assert!(matches!(
            uid_fetch(&mut s, "1:*", "(UID RFC822.SIZE FLAGS)").await,
            Err(Error::No(_))
        ));
        assert!(matches!(
            uid_fetch(&mut s, "6", "BODY.PEEK[]").await,
            Err(Error::ConnectionLost)
        ));
    }

    #[tokio::test]
    async fn a_search_is_taken_only_when_the_server_says_ok() {
        let mut s = session(vec![
            Some("* SEARCH 7 12 40\r\n{tag} OK done\r\n"),
            Some("* SEARCH\r\n{tag} OK nothing\r\n"),
            Some("{tag} NO [SERVERBUG] try later\r\n"),
        ])
        .await;
        assert_eq!(
            uid_search(&mut s, "UID 5:50").await.unwrap(),
            vec![7, 12, 40]
        );
        assert!(uid_search(&mut s, "UID 51:90").await.unwrap().is_empty());
        assert!(matches!(
            uid_search(&mut s, "UID 91:99").await,
            Err(Error::No(_))
        ));
    }

    #[tokio::test]
    async fn a_connection_closing_mid_fetch_is_an_error() {
        let mut s = session(vec![None]).await;
        assert!(uid_fetch(&mut s, "5", "BODY.PEEK[]").await.is_err());
    }

    #[tokio::test]
    async fn a_refused_store_is_an_error() {
        let mut s = session(vec![
            Some("{tag} NO [READ-ONLY] Mailbox is read-only\r\n"),
            Some("{tag} OK stored\r\n"),
        ])
        .await;
        assert!(matches!(
            ok(&mut s, "UID STORE 5 +FLAGS.SILENT (\\Seen)").await,
            Err(Error::No(_))
        ));
        ok(&mut s, "UID STORE 5 +FLAGS.SILENT (\\Seen)")
            .await
            .unwrap();
    }
}
