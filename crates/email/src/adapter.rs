//! The email channel as a plug-in: the listener, the IMAP fetchers and the
//! reply sender, sharing one [`Ingest`].

use crate::attachments::AttachmentStore;
use crate::config::{EmailConfig, ListenProtocol, Security, config_error, parse_after};
use crate::ingest::{Arrival, Ingest, IngestError, Taken};
use crate::listen::{self, Envelope, MailSink, RcptVerdict, Reply};
use crate::outbound::Sender;
use crate::parse::ParseLimits;
use crate::{config, imap};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use switchboard_channel::{
    ChannelAdapter, ChannelConfig, ChannelContext, ChannelError, MediaSource,
};
use tracing::{Instrument, error, info_span};

impl ChannelConfig for EmailConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Result<(), ChannelError> {
        self.check()?;
        if let Some(l) = &self.listen
            && let (Some(cert), Some(key)) = (&l.tls_cert, &l.tls_key)
        {
            listen::load_tls(cert, key)
                .map_err(|e| config_error(&self.name, "listen.tls_cert", &e.to_string()))?;
        }
        Ok(())
    }

    fn resources(&self) -> Vec<switchboard_channel::Resource> {
        self.claims()
    }

    fn build(&self, ctx: ChannelContext) -> Result<Box<dyn ChannelAdapter>, ChannelError> {
        self.validate()?;
        let attachments =
            AttachmentStore::open(&self.attachments_dir, self.max_attachment_bytes)
                .map_err(|e| config_error(&self.name, "attachments_dir", &e.to_string()))?;
        let ingest = Ingest {
            source: ctx.name.clone(),
            intake: ctx.intake.clone(),
            attachments: attachments.clone(),
            limits: ParseLimits {
                max_attachment_bytes: self.max_attachment_bytes,
                // The intake's limit: the text with its attachment lines
                // is fitted to it (`Ingest::take`).
                max_text_bytes: ctx.intake.limits().max_text_bytes,
                ..ParseLimits::default()
            },
            bulk: self.bulk,
            accepts: config::Accepts::of(self),
            customer_address: self.customer_address,
            reply_to_senders: self.reply_to_senders.clone(),
        };
        let sender = Arc::new(Sender::new(&self.name, &self.smtp)?);
        Ok(Box::new(EmailAdapter {
            config: self.clone(),
            ingest: Arc::new(ingest),
            attachments: Arc::new(attachments),
            sender,
            ctx,
        }))
    }
}

struct EmailAdapter {
    config: EmailConfig,
    ingest: Arc<Ingest>,
    attachments: Arc<AttachmentStore>,
    sender: Arc<Sender>,
    ctx: ChannelContext,
}

impl ChannelAdapter for EmailAdapter {
    fn media(&self) -> Option<Arc<dyn MediaSource>> {
        Some(self.attachments.clone())
    }

    fn run(self: Box<Self>) -> BoxFuture<'static, Result<(), ChannelError>> {
        Box::pin(async move {
            let name = self.ctx.name.clone();
            let mut tasks = tokio::task::JoinSet::new();
            if let Some(l) = &self.config.listen {
                let tls = match (&l.tls_cert, &l.tls_key) {
                    (Some(c), Some(k)) => Some(
                        listen::load_tls(c, k)
                            .map_err(|e| config_error(&name, "listen.tls_cert", &e.to_string()))?,
                    ),
                    _ => None,
                };
                let settings = Arc::new(listen::ListenerSettings {
                    name: name.clone(),
                    protocol: match l.protocol {
                        ListenProtocol::Lmtp => listen::Protocol::Lmtp,
                        ListenProtocol::Smtp => listen::Protocol::Smtp,
                    },
                    hostname: l
                        .hostname
                        .clone()
                        .unwrap_or_else(|| self.ingest.accepts.hostname()),
                    max_message_bytes: self.config.max_message_bytes,
                    max_recipients: l.max_recipients,
                    command_timeout: Duration::from_secs(l.command_timeout_secs),
                    max_sessions: l.max_sessions,
                    max_session: listen::MAX_SESSION,
                    tls,
                    require_tls: l.require_tls,
                    budget: listen::ListenerSettings::budget(
                        l.max_mib_in_flight.saturating_mul(1 << 20),
                    ),
                });
                let socket = tokio::net::TcpListener::bind(l.address).await?;
                let sink: Arc<dyn MailSink> = Arc::new(ListenerSink(self.ingest.clone()));
                // Stops accepting when the daemon starts to drain.
                let draining = self.ctx.draining.clone();
                tasks.spawn(
                    listen::serve(socket, settings, sink, draining)
                        .instrument(info_span!("email_listener", source = %name)),
                );
            }
            for m in &self.config.imap {
                let settings = imap::MailboxSettings {
                    label: m.label(),
                    host: m.host.clone(),
                    port: m.port(),
                    security: match m.security {
                        Security::Tls => imap::Security::Tls,
                        Security::StartTls => imap::Security::StartTls,
                        Security::None => imap::Security::None,
                    },
                    user: m.user.clone(),
                    password: m.password.resolve()?.expose().to_owned(),
                    folder: m.folder.clone(),
                    after: match parse_after(&m.after) {
                        Some(config::After::Move(f)) => imap::AfterIntake::Move(f),
                        Some(config::After::Delete) => imap::AfterIntake::Delete,
                        _ => imap::AfterIntake::Seen,
                    },
                    poll_interval: Duration::from_secs(m.poll_interval_secs),
                    idle: m.idle,
                    max_message_bytes: self.config.max_message_bytes,
                    pass_over_after: imap::PASS_OVER_AFTER,
                    tls_roots: None,
                };
                let sink: Arc<dyn imap::FetchedMailSink> = Arc::new(ImapSink {
                    ingest: self.ingest.clone(),
                    address: m.address.clone(),
                });
                tasks.spawn(imap::run_mailbox(
                    settings,
                    sink,
                    self.ctx.state.clone(),
                    // No new fetch rounds once the daemon drains.
                    self.ctx.draining.clone(),
                ));
            }
            if self.config.attachments_keep_days > 0 {
                tasks.spawn(switchboard_channel::files::keep_clean(
                    name.clone(),
                    "attachments",
                    self.config.attachments_dir.clone(),
                    Duration::from_secs(self.config.attachments_keep_days * 86_400),
                    Duration::from_secs(3600),
                    self.ctx.shutdown.clone(),
                ));
            }
            let sender = self.sender.clone();
            let ctx = self.ctx.clone();
            let result = sender
                .run(ctx)
                .instrument(info_span!("email_sender", source = %name))
                .await;
            while let Some(joined) = tasks.join_next().await {
                if let Err(e) = joined {
                    error!(error = %e, "An email task failed.");
                }
            }
            result
        })
    }
}

/// The listener's view of the ingest.
struct ListenerSink(Arc<Ingest>);

impl MailSink for ListenerSink {
    fn recipient(&self, address: &str) -> RcptVerdict {
        if self.0.accepts.accepts(address) {
            RcptVerdict::Accept
        } else {
            RcptVerdict::Unknown
        }
    }

    fn deliver<'a>(&'a self, envelope: &'a Envelope, data: &'a [u8]) -> BoxFuture<'a, Vec<Reply>> {
        Box::pin(async move {
            let from = (!envelope.mail_from.is_empty()).then_some(envelope.mail_from.as_str());
            // One mail to several of our addresses is one contact: the
            // first address routes it; every recipient gets the same answer.
            let arrival = Arrival {
                rcpt: envelope.recipients.first().map(String::as_str),
                envelope_from: from,
                null_sender: envelope.mail_from.is_empty(),
                ..Arrival::default()
            };
            let reply = match self.0.take(data, arrival).await {
                Ok(taken) => Reply::ok(&accepted_text(&taken)),
                Err(IngestError::Temporary(e)) => {
                    tracing::warn!(error = %e, "Mail not stored; the sender will retry.");
                    Reply::temporary("try again later: storage unavailable")
                }
                Err(IngestError::Rejected(e)) => Reply::rejected(&e),
            };
            vec![reply; envelope.recipients.len()]
        })
    }
}

fn accepted_text(taken: &Taken) -> String {
    match taken {
        Taken::Stored {
            contact_id,
            outcome,
        } => format!("stored ({outcome}) as contact {contact_id}"),
        Taken::Update { kind, outcome } => format!("{kind} recorded ({outcome})"),
        Taken::Ignored { kind } => format!("{kind} mail accepted, not routed"),
    }
}

/// The IMAP fetcher's view of the ingest.
struct ImapSink {
    ingest: Arc<Ingest>,
    address: Option<String>,
}

impl imap::FetchedMailSink for ImapSink {
    fn deliver<'a>(
        &'a self,
        _mailbox: &'a imap::MailboxSettings,
        _uid: u32,
        raw: &'a [u8],
        fallback_id: &'a str,
    ) -> BoxFuture<'a, Result<imap::Delivered, imap::SinkError>> {
        Box::pin(async move {
            match self
                .ingest
                .take(
                    raw,
                    Arrival {
                        default_address: self.address.as_deref(),
                        fallback_id: Some(fallback_id),
                        ..Arrival::default()
                    },
                )
                .await
            {
                Ok(taken) if taken.kept() => Ok(imap::Delivered::Taken),
                Ok(_) => Ok(imap::Delivered::Left("not_kept")),
                Err(IngestError::Temporary(e)) => Err(imap::SinkError::Temporary(e)),
                Err(IngestError::Rejected(e)) => Err(imap::SinkError::Rejected(e)),
            }
        })
    }
}
