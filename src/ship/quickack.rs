//! Acknowledge what the server sends at once. sshd leaves Nagle on for SFTP sessions, so when it
//! sends two small packets in a row (as it does while opening the SFTP channel) the second waits
//! for our ACK of the first, and Linux delays that ACK by up to 40 ms: 40 ms lost per session.
//! libssh2 lets us replace its `recv`; ours is the same call followed by TCP_QUICKACK (which
//! Linux resets after a while, hence once per receive), for as long as the session opens.

use ssh2::Session;
use std::ffi::{c_int, c_void};

/// `LIBSSH2_CALLBACK_RECV` in libssh2.h.
const LIBSSH2_CALLBACK_RECV: c_int = 6;

type RecvCallback = unsafe extern "C" fn(c_int, *mut c_void, libc::size_t, c_int, *mut *mut c_void) -> libc::ssize_t;

extern "C" {
    // Public libssh2 API (1.11.1+), in the library libssh2-sys links; the ssh2 crate does not wrap it.
    fn libssh2_session_callback_set2(
        session: *mut c_void,
        cbtype: c_int,
        callback: Option<unsafe extern "C" fn()>,
    ) -> Option<unsafe extern "C" fn()>;
}

/// The receive function libssh2 used before `install`, for `remove`.
pub struct Installed(Option<unsafe extern "C" fn()>);

/// Installs the quick-ACK receive on a session, before its handshake.
pub fn install(session: &Session) -> Installed {
    // SAFETY: function pointers of one size; libssh2 stores callbacks as a generic function
    // pointer and calls a RECV callback with the RECV signature.
    let callback = unsafe { std::mem::transmute::<RecvCallback, unsafe extern "C" fn()>(recv_quickack) };
    Installed(set_recv(session, Some(callback)))
}

/// Gives the session back its own receive once it is open: while files stream, our requests
/// carry the ACKs, and an ACK of its own per response would only add packets.
pub fn remove(session: &Session, installed: Installed) {
    set_recv(session, installed.0);
}

fn set_recv(session: &Session, callback: Option<unsafe extern "C" fn()>) -> Option<unsafe extern "C" fn()> {
    let mut raw = session.raw();
    let pointer = &mut *raw as *mut _ as *mut c_void;
    // SAFETY: `pointer` is the live session, locked by `raw` for this call.
    unsafe { libssh2_session_callback_set2(pointer, LIBSSH2_CALLBACK_RECV, callback) }
}

/// libssh2's own `recv` replacement (misc.c: -errno on failure, EINTR as EAGAIN), plus the ACK.
unsafe extern "C" fn recv_quickack(
    socket: c_int,
    buffer: *mut c_void,
    length: libc::size_t,
    flags: c_int,
    _abstract: *mut *mut c_void,
) -> libc::ssize_t {
    let received = libc::recv(socket, buffer, length, flags);
    if received < 0 {
        let errno = *libc::__errno_location();
        let errno = if errno == libc::EINTR { libc::EAGAIN } else { errno };
        return -(errno as libc::ssize_t);
    }
    if received > 0 {
        let on: c_int = 1;
        libc::setsockopt(
            socket,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            &on as *const c_int as *const c_void,
            std::mem::size_of::<c_int>() as libc::socklen_t,
        );
    }
    received
}
