//! Our checks of a request before the crate sees it: the REST
//! credential (expiry, MESSAGE-INTEGRITY under the derived password), the
//! peer filter, quotas and transports, and the replies that refuse.

use turn_server_proto::api::TurnServerApi as _;
use turn_server_proto::types::attribute::{RequestedTransport, XorPeerAddress};
use turn_server_proto::types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};
use turn_server_proto::types::stun::attribute::{
    ErrorCode, MessageIntegrity, MessageIntegritySha256, Nonce, Realm, Username,
};
use turn_server_proto::types::stun::message::{
    IntegrityAlgorithm, LongTermCredentials, Message, MessageIntegrityCredentials, MessageWriteVec,
};
use turn_server_proto::types::stun::prelude::{
    Attribute as _, AttributeFromRaw as _, AttributeStaticType as _, MessageWrite, MessageWriteExt,
};

use super::super::credentials::{self, UsernameError};
use super::super::metrics::Refusal;
use super::{Client, User};

impl Client {
    /// Our checks of a request before the crate sees it; `Some` is the reply
    /// that refuses it.
    pub(super) fn check_request(&mut self, msg: &Message<'_>) -> Option<Vec<u8>> {
        let method = msg.method();
        let authenticated = [ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND].contains(&method);
        if !authenticated {
            return None;
        }
        let has_integrity = msg.has_attribute(MessageIntegrity::TYPE)
            || msg.has_attribute(MessageIntegritySha256::TYPE);
        if !has_integrity {
            return None; // the crate's 401 challenge
        }
        let name = msg.attribute::<Username>().ok()?;
        let name = name.username();
        let now_unix = credentials::unix_seconds(std::time::SystemTime::now());
        let known = self.user.as_ref().is_some_and(|u| u.name == name);
        match credentials::check_username(name, now_unix) {
            Err(e) => {
                self.ctx.metrics.refused(match e {
                    UsernameError::Expired => Refusal::Expired,
                    UsernameError::Malformed => Refusal::MalformedUsername,
                });
                // A name the crate never learnt gets its own 401 from it; a
                // known one that has expired must be refused here.
                return known.then(|| self.unauthorized(msg));
            }
            Ok(parsed) if !known => {
                let password = credentials::password(&self.ctx.secret, name);
                let key: MessageIntegrityCredentials =
                    LongTermCredentials::new(name.to_owned(), password.clone())
                        .to_key(self.ctx.realm.clone())
                        .into();
                if msg.validate_integrity(&key).is_err() {
                    self.ctx.metrics.refused(Refusal::WrongCredential);
                    return None; // the crate answers 401
                }
                self.inner.add_user(name.to_owned(), password);
                if self.user.is_none() {
                    self.user = Some(User {
                        name: name.to_owned(),
                        label: parsed.label.into(),
                        expires_at: parsed.expires_at,
                        key,
                    });
                }
            }
            Ok(_) => {}
        }
        // The request is the client's own (its name, not expired): is it one
        // to refuse?
        let user = self.user.as_ref()?;
        if user.name != name || now_unix > user.expires_at {
            return None; // the crate answers 441 for another name
        }
        let refusal = if method == ALLOCATE {
            let transport = msg.attribute::<RequestedTransport>().ok();
            if transport.is_some_and(|t| t.protocol() != RequestedTransport::UDP) {
                Some(Refusal::UnsupportedTransport)
            } else if self.allocation.is_none() && !self.ctx.quotas.user_has_room(&user.label) {
                Some(Refusal::UserQuota)
            } else {
                None
            }
        } else if method == CREATE_PERMISSION || method == CHANNEL_BIND {
            msg.iter_attributes()
                .filter(|(_, a)| a.get_type() == XorPeerAddress::TYPE)
                .filter_map(|(_, a)| XorPeerAddress::from_raw(a).ok())
                .find_map(|p| self.ctx.filter.check(p.addr(msg.transaction_id())).err())
                .map(Refusal::Peer)
        } else {
            None
        }?;
        // A signed refusal only for a request that authenticates under the
        // client's key and current nonce.
        let nonce_ok = match (msg.attribute::<Nonce>(), &self.nonce) {
            (Ok(n), Some(ours)) => n.nonce() == ours,
            _ => false,
        };
        let verified = nonce_ok
            .then(|| msg.validate_integrity(&user.key).ok())
            .flatten();
        let Some(algorithm) = verified else {
            // A forbidden peer never reaches the crate, whatever else is
            // wrong with the request: 401 with the current nonce. (Quota and
            // transport refusals can: the crate refuses those requests
            // itself, or asks us for the socket, which the quota refuses.)
            return matches!(refusal, Refusal::Peer(_)).then(|| self.unauthorized(msg));
        };
        self.ctx.metrics.refused(refusal);
        let code = match refusal {
            Refusal::UnsupportedTransport => ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
            Refusal::UserQuota => ErrorCode::ALLOCATION_QUOTA_REACHED,
            _ => ErrorCode::FORBIDDEN,
        };
        self.signed_error(msg, code, algorithm)
    }

    /// An error response signed with the client's key.
    fn signed_error(
        &self,
        msg: &Message<'_>,
        code: u16,
        algorithm: IntegrityAlgorithm,
    ) -> Option<Vec<u8>> {
        let user = self.user.as_ref()?;
        let mut reply = Message::builder_error(msg, MessageWriteVec::with_capacity(128));
        reply
            .add_attribute(&ErrorCode::builder(code).build().ok()?)
            .ok()?;
        if let Some(nonce) = &self.nonce {
            reply.add_attribute(&Nonce::new(nonce).ok()?).ok()?;
        }
        reply
            .add_attribute(&Realm::new(&self.ctx.realm).ok()?)
            .ok()?;
        reply.add_message_integrity(&user.key, algorithm).ok()?;
        reply.add_fingerprint().ok()?;
        Some(reply.finish())
    }

    /// A 401 for a credential that no longer holds (unsigned: the client's
    /// key is what is refused), with the realm and the current nonce.
    fn unauthorized(&self, msg: &Message<'_>) -> Vec<u8> {
        let mut reply = Message::builder_error(msg, MessageWriteVec::with_capacity(96));
        if let Ok(code) = ErrorCode::builder(ErrorCode::UNAUTHORIZED).build() {
            let _ = reply.add_attribute(&code);
        }
        if let Some(nonce) = self.nonce.as_deref().and_then(|n| Nonce::new(n).ok()) {
            let _ = reply.add_attribute(&nonce);
        }
        if let Ok(realm) = Realm::new(&self.ctx.realm) {
            let _ = reply.add_attribute(&realm);
        }
        reply.finish()
    }
}
