//! The ring buffer's reader: a thread of its own that takes records out
//! whenever the kernel wakes a reader (the ring an eighth full, or an
//! urgent record), so that the ring need hold only what comes while that
//! thread waits for a core. Before it, the collector's one thread read the
//! ring between everything else it does (attaching to a process, naming a
//! process's first stacks, answering a scrape), and the ring had to hold
//! all that came meanwhile: 16 MiB, which the kernel maps twice (32 MiB of
//! the tracer's RSS). A 4 MiB ring lost 14,202 records while the collector
//! attached to a flat-out loop on a loaded machine (fresh62).

use std::{
    fs::File,
    io::Write as _,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::{Arc, Mutex, MutexGuard},
    thread::JoinHandle,
};

use anyhow::{Context as _, anyhow};
use aya::maps::{MapData, RingBuf};
use tokio::sync::Notify;

/// The ring and what has been taken out of it but not handed on yet.
pub struct Taken {
    ring: RingBuf<MapData>,
    /// The records taken, in the kernel's order, each after its length (4
    /// bytes: `framed_records`), until the collector's next drain takes them.
    /// Copied as they are, not decoded: the collector decodes them, so the
    /// memory of a decoded record is allocated and freed by one thread
    /// (glibc's per-thread cache; allocated here and freed there, each
    /// malloc and free took the arena's slow path).
    pub bytes: Vec<u8>,
    /// Records taken so far.
    pub seen: u64,
    /// Every record as the kernel wrote it, each after its length (4
    /// bytes, as in `bytes`), appended to the file named by
    /// `TRACER_DUMP_RECORDS`: what crossed from the kernel, for the tests
    /// that check that no more than the method and path of a request, or
    /// the question of a DNS message, ever does (record by record: a stack
    /// copy is raw stack memory, which may hold anything).
    dump: Option<File>,
}

impl Taken {
    /// Takes every record the ring holds now; returns how many.
    pub fn take_pending(&mut self) -> u64 {
        let before = self.seen;
        while let Some(item) = self.ring.next() {
            self.seen += 1;
            // A record is at most the ring's size, which is a u32.
            let len = (item.len() as u32).to_ne_bytes();
            if let Some(dump) = self.dump.as_mut() {
                let _ = dump.write_all(&len).and_then(|()| dump.write_all(&item));
            }
            self.bytes.extend_from_slice(&len);
            self.bytes.extend_from_slice(&item);
        }
        self.seen - before
    }
}

/// The reader thread and what it shares with the collector.
pub struct Intake {
    taken: Arc<Mutex<Taken>>,
    /// Told when the reader took records: the collector drains then.
    woken: Arc<Notify>,
    /// Written to stop the reader.
    stop: OwnedFd,
    reader: Option<JoinHandle<()>>,
}

impl Intake {
    pub fn start(ring: RingBuf<MapData>) -> anyhow::Result<Self> {
        let dump = match std::env::var_os("TRACER_DUMP_RECORDS") {
            Some(path) => Some(
                File::create(&path)
                    .with_context(|| format!("creating {}", path.to_string_lossy()))?,
            ),
            None => None,
        };
        let ring_fd = ring.as_fd().as_raw_fd();
        let taken = Arc::new(Mutex::new(Taken {
            ring,
            bytes: Vec::new(),
            seen: 0,
            dump,
        }));
        // SAFETY: eventfd returns a new descriptor or -1, checked below.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(std::io::Error::last_os_error()).context("creating an eventfd");
        }
        // SAFETY: `stop` is a descriptor we own from here on.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let epoll = wait_set(ring_fd, stop.as_raw_fd())?;
        let woken = Arc::new(Notify::new());
        let reader = {
            let (taken, woken) = (Arc::clone(&taken), Arc::clone(&woken));
            std::thread::Builder::new()
                .name("ring-reader".into())
                .spawn(move || read_when_woken(&epoll, ring_fd, &taken, &woken))
                .context("starting the ring buffer's reader thread")?
        };
        Ok(Self {
            taken,
            woken,
            stop,
            reader: Some(reader),
        })
    }

    /// Waits until the reader took records.
    pub async fn woken(&self) {
        self.woken.notified().await;
    }

    /// The ring and what the reader took, locked: the collector takes the
    /// ring's rest itself, after what the reader took, so a drain hands on
    /// every record written before it, in order.
    pub fn lock(&self) -> MutexGuard<'_, Taken> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own.
        unsafe {
            libc::write(
                self.stop.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// An epoll set of the ring (edge-triggered: woken by the kernel's wakeups
/// only, not whenever a record waits, as the kernel holds most records
/// back until an eighth of the ring is used) and of the stop descriptor.
fn wait_set(ring_fd: RawFd, stop_fd: RawFd) -> anyhow::Result<OwnedFd> {
    // SAFETY: epoll_create1 returns a new descriptor or -1, checked below.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(std::io::Error::last_os_error()).context("creating an epoll set");
    }
    // SAFETY: a descriptor we own from here on.
    let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
    for (fd, flags) in [
        (ring_fd, libc::EPOLLIN | libc::EPOLLET),
        (stop_fd, libc::EPOLLIN),
    ] {
        let mut event = libc::epoll_event {
            events: flags as u32,
            u64: fd as u64,
        };
        // SAFETY: both descriptors are open; `event` lives across the call.
        if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            return Err(anyhow!(
                "watching the ring buffer: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(epoll)
}

/// The reader thread: takes the ring's records each time the kernel wakes
/// it, until the stop descriptor is written.
fn read_when_woken(epoll: &OwnedFd, ring_fd: RawFd, taken: &Mutex<Taken>, woken: &Notify) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
    loop {
        // SAFETY: `events` has room for the 2 entries asked for.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::warn!("the ring buffer's reader stopped: {error}; records are taken every 200 ms");
            return;
        }
        let ready = &events[..n as usize];
        if ready.iter().any(|e| e.u64 != ring_fd as u64) {
            return;
        }
        let took = taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_pending();
        if took > 0 {
            woken.notify_one();
        }
    }
}
