//! A batch goes only to the tenant it was recorded for. A tenant is `user@host:port`; one
//! account may be spelled several ways (`localhost`, `127.0.0.1`, a renamed host), so at start
//! each route takes the spelling the store already knows for the same account (same user and
//! port, a host that resolves to a common address): the duplicate guard then sees one tenant.
//! On every attempt the record's tenant and remote folder are compared with where its route
//! points now; a batch whose route was pointed elsewhere is refused, never sent there.

use crate::config::Route;
use crate::store::{BatchRecord, Store, StoreError};
use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

/// How long a host name may take to resolve before it counts as unresolvable (then only the
/// spelling is compared).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Gives each route the spelling of its tenant that the store (or an earlier route) already
/// uses for the same account, so that one account is one tenant to the duplicate guard.
pub async fn unify(store: &Store, routes: &mut [Route]) -> Result<(), StoreError> {
    let mut known: Vec<String> = store.tenants().await?;
    for route in routes.iter_mut() {
        let configured = route.tenant.clone();
        if !known.contains(&configured) {
            let candidates = known.clone();
            let same = crate::telemetry::blocking(move || candidates.into_iter().find(|k| same_account(k, &configured))).await;
            if let Some(spelled) = same {
                tracing::info!(route = route.label(), configured = %route.tenant, as_recorded = %spelled, "one Jumio account spelled two ways: the route uses the spelling batches were recorded under");
                route.tenant = spelled;
            }
        }
        if !known.contains(&route.tenant) {
            known.push(route.tenant.clone());
        }
    }
    Ok(())
}

/// Why a record may not go where its route points now; `None` when it may.
pub async fn refusal(record: &BatchRecord, way: &super::Way) -> Option<String> {
    let (route, uuid) = (&way.route, record.remote_uuid.as_deref());
    let folder_now = uuid.map(|u| way.channel.remote_dir(u));
    let folder_moved = match (&record.remote_dir, &folder_now) {
        (Some(then), Some(now)) => then != now,
        _ => false,
    };
    let tenant_moved = match &record.origin.tenant {
        Some(then) if *then != route.tenant => {
            let (then, now) = (then.clone(), route.tenant.clone());
            !crate::telemetry::blocking(move || same_account(&then, &now)).await
        }
        _ => false,
    };
    if !tenant_moved && !folder_moved {
        return None;
    }
    let then = format!(
        "{}{}",
        record.origin.tenant.as_deref().unwrap_or("?"),
        record.remote_dir.as_deref().map(|d| format!(" folder {d}")).unwrap_or_default()
    );
    let now = format!("{}{}", route.tenant, folder_now.map(|d| format!(" folder {d}")).unwrap_or_default());
    let what = match uuid {
        Some(_) => "its remote folder there may hold part of it (without DONE): point the route back to finish it there, or, if it is meant for the new tenant, drop a copy into that route's inbox as a new batch",
        None => "nothing of it was sent yet: if it is meant for the new tenant, drop it into that route's inbox again",
    };
    Some(format!(
        "this batch was recorded for tenant {then}, but route {} now goes to {now}; a batch is only ever sent to the tenant it was dropped for, so it was not sent. {what}",
        route.label()
    ))
}

/// True when two tenants are one account: spelled alike, or the same user and port on hosts
/// that resolve to a common address.
pub fn same_account(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (Some((user_a, host_a, port_a)), Some((user_b, host_b, port_b))) = (parse(a), parse(b)) else { return false };
    // A user name is the server's to compare: `root` and `ROOT` are two accounts.
    if user_a != user_b || port_a != port_b {
        return false;
    }
    if host_a.eq_ignore_ascii_case(host_b) {
        return true;
    }
    let (addrs_a, addrs_b) = (addresses(host_a, port_a), addresses(host_b, port_b));
    !addrs_a.is_empty() && addrs_a.intersection(&addrs_b).next().is_some()
}

/// `user@host:port` into its parts (an IPv6 host may be in brackets).
fn parse(tenant: &str) -> Option<(&str, &str, u16)> {
    let (user, rest) = tenant.split_once('@')?;
    let (host, port) = rest.rsplit_once(':')?;
    Some((user, host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.'), port.parse().ok()?))
}

/// The addresses `host` resolves to, within `RESOLVE_TIMEOUT` (none when it does not).
fn addresses(host: &str, port: u16) -> BTreeSet<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return BTreeSet::from([ip]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = format!("{host}:{port}");
    std::thread::spawn(move || {
        let found: BTreeSet<IpAddr> = name.to_socket_addrs().map(|a| a.map(|s| s.ip()).collect()).unwrap_or_default();
        let _ = tx.send(found);
    });
    rx.recv_timeout(RESOLVE_TIMEOUT).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_account_spelled_two_ways_is_one_tenant_and_another_user_or_port_is_not() {
        assert!(same_account("acme@localhost:22", "acme@127.0.0.1:22"));
        assert!(same_account("acme@SFTP.example:22", "acme@sftp.example:22"));
        assert!(same_account("acme@[::1]:22", "acme@::1:22"));
        assert!(!same_account("acme@localhost:22", "other@127.0.0.1:22"), "another user is another tenant");
        assert!(!same_account("root@127.0.0.1:22", "ROOT@127.0.0.1:22"), "user names are case-sensitive");
        assert!(!same_account("acme@localhost:22", "acme@127.0.0.1:2222"), "another port");
        assert!(!same_account("acme@127.0.0.2:22", "acme@127.0.0.1:22"));
        assert!(!same_account("acme@no-such-host.invalid:22", "acme@127.0.0.1:22"), "an unresolvable host is only its spelling");
    }
}
