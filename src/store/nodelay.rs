//! TCP_NODELAY for sqlx's PostgreSQL sockets.
//!
//! sqlx 0.9.0 stopped setting TCP_NODELAY (sqlx issue #4335; fixed upstream in
//! PR #4336, not yet released). Without it, any statement larger than the
//! socket's first send window waits ~40 ms for a delayed ACK: a batch upsert or
//! a claim costs 45 ms instead of 2. sqlx does not expose its socket, so after
//! each new connection this sets the option on every TCP socket of the process
//! (harmless for the others, which want it too). Remove once sqlx sets it again.

/// Sets TCP_NODELAY on every TCP socket this process holds.
#[cfg(target_os = "linux")]
pub fn apply() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::c_int>().ok())
        else {
            continue;
        };
        let mut current: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `current` and `len` are valid for writes of the sizes given; on a
        // descriptor that is not a TCP socket getsockopt fails and nothing changes.
        let is_tcp = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&mut current as *mut libc::c_int).cast(),
                &mut len,
            )
        } == 0;
        if is_tcp && current == 0 {
            let on: libc::c_int = 1;
            // SAFETY: `on` lives across the call and its size is passed.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn apply() {}
