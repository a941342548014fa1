//! Receivers as written in rule files (`receivers:`): a name, whether
//! resolutions are sent, and exactly one kind. The kinds form a closed
//! enum: a new kind does not compile until its checker and its delivery
//! are handled here (see the README's Development recipes).

use marked_yaml::Node;

use super::{alertmanager, email, log, slack, webhook, Context, DeliveryError, Message};
use crate::yaml::Checker;

#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    /// Also notify when an alert resolves (Alertmanager's default: true).
    pub send_resolved: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverKind {
    Email(email::Config),
    Slack(slack::Config),
    Webhook(webhook::Config),
    Alertmanager(alertmanager::Config),
    Log(log::Config),
}

/// The kinds by their key in a rule file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Email,
    Slack,
    Webhook,
    Alertmanager,
    Log,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Email,
        Kind::Slack,
        Kind::Webhook,
        Kind::Alertmanager,
        Kind::Log,
    ];

    /// The key of the kind in a receiver (`email:`, `slack:`, ...).
    pub fn key(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Slack => "slack",
            Kind::Webhook => "webhook",
            Kind::Alertmanager => "alertmanager",
            Kind::Log => "log",
        }
    }

    /// Checks the kind's settings.
    fn check(self, c: &mut Checker, node: &Node, what: &str) -> Option<ReceiverKind> {
        Some(match self {
            Kind::Email => ReceiverKind::Email(email::check(c, node, what)?),
            Kind::Slack => ReceiverKind::Slack(slack::check(c, node, what)?),
            Kind::Webhook => ReceiverKind::Webhook(webhook::check(c, node, what)?),
            Kind::Alertmanager => ReceiverKind::Alertmanager(alertmanager::check(c, node, what)?),
            Kind::Log => ReceiverKind::Log(log::check(c, node, what)?),
        })
    }
}

impl ReceiverKind {
    pub fn kind(&self) -> Kind {
        match self {
            ReceiverKind::Email(_) => Kind::Email,
            ReceiverKind::Slack(_) => Kind::Slack,
            ReceiverKind::Webhook(_) => Kind::Webhook,
            ReceiverKind::Alertmanager(_) => Kind::Alertmanager,
            ReceiverKind::Log(_) => Kind::Log,
        }
    }
}

impl Receiver {
    /// Alertmanager receivers group and repeat by themselves: alerts are
    /// pushed to them one by one (`alertmanager::push`), not grouped here.
    pub fn is_alertmanager(&self) -> bool {
        self.kind.kind() == Kind::Alertmanager
    }

    /// One delivery attempt of a message.
    pub async fn send(&self, message: &Message, cx: Context<'_>) -> Result<(), DeliveryError> {
        match &self.kind {
            ReceiverKind::Email(c) => email::send(c, message, cx).await,
            ReceiverKind::Slack(c) => slack::send(c, message, cx).await,
            ReceiverKind::Webhook(c) => webhook::send(c, message, cx).await,
            ReceiverKind::Alertmanager(c) => alertmanager::send(c, message, cx).await,
            ReceiverKind::Log(c) => log::send(c, message),
        }
    }
}

/// Checks one entry of `receivers:`.
pub fn check(c: &mut Checker, node: &Node, what: &str) -> Option<Receiver> {
    let keys: Vec<&str> = Kind::ALL.iter().map(|k| k.key()).collect();
    let mut allowed = vec!["name", "send_resolved"];
    allowed.extend_from_slice(&keys);
    let f = c.fields(node, what, &allowed)?;
    let name = f
        .require(c, "name")
        .and_then(|n| c.string(n, &f.path("name")));
    let send_resolved = match f.get("send_resolved") {
        None => true,
        Some(n) => c.boolean(n, &f.path("send_resolved"))?,
    };
    let given: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| f.get(k.key()).is_some())
        .collect();
    let kind = match given.as_slice() {
        [k] => {
            let node = f.get(k.key())?;
            k.check(c, node, &f.path(k.key()))
        }
        _ => {
            c.at(
                f.span(),
                format!("{what}: give exactly one of: {}", keys.join(", ")),
            );
            None
        }
    };
    Some(Receiver {
        name: name?,
        kind: kind?,
        send_resolved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_read_from_its_key() {
        let settings = |k: Kind| match k {
            Kind::Email => "{to: [a@example.org], from: dw@example.org, smarthost: 'mail:25'}",
            Kind::Slack => "{url_env: SLACK_URL}",
            Kind::Webhook => "{url: 'http://hooks:8080/x'}",
            Kind::Alertmanager => "{url: 'http://am:9093'}",
            Kind::Log => "{}",
        };
        for k in Kind::ALL {
            let text = format!("r:\n  name: n\n  {}: {}\n", k.key(), settings(k));
            let mut c = Checker::new("r.yaml");
            let top = c.parse(&text).expect("YAML");
            let node = top.get_node("r").expect("r").clone();
            let r = check(&mut c, &node, "r");
            assert!(c.diagnostics.is_empty(), "{}: {:?}", k.key(), c.diagnostics);
            assert_eq!(r.map(|r| r.kind.kind()), Some(k));
        }
    }
}
