//! Connection and stream bounds, each released by dropping a guard.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use parking_lot::Mutex;

/// Open streams per client IP.
#[derive(Debug)]
pub struct StreamLimits {
    max_per_ip: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open stream, counted against its client IP until dropped.
#[derive(Debug)]
pub struct StreamPermit {
    limits: Arc<StreamLimits>,
    ip: IpAddr,
}

impl StreamLimits {
    /// Bounds of `max_per_ip` open streams per IP.
    pub fn new(max_per_ip: usize) -> Self {
        Self { max_per_ip, open: Mutex::default() }
    }

    /// Counts a new stream for `ip`, unless it has its maximum already.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<StreamPermit> {
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return None;
        }
        *count += 1;
        Some(StreamPermit { limits: Arc::clone(self), ip })
    }

    /// Streams open for `ip` now.
    pub fn open_for(&self, ip: IpAddr) -> usize {
        self.open.lock().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Open TCP connections, all clients together.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: AtomicUsize,
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct ConnectionPermit(Arc<ConnectionLimit>);

impl ConnectionLimit {
    /// A bound of `max` connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, open: AtomicUsize::new(0) })
    }

    /// Counts a new connection, unless the maximum is open already.
    pub fn acquire(self: &Arc<Self>) -> Option<ConnectionPermit> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| ConnectionPermit(Arc::clone(self)))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_counted_and_released() {
        let limits = Arc::new(StreamLimits::new(2));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = limits.acquire(ip).unwrap();
        let _b = limits.acquire(ip).unwrap();
        assert!(limits.acquire(ip).is_none());
        assert!(limits.acquire("10.0.0.2".parse().unwrap()).is_some());
        drop(a);
        assert!(limits.acquire(ip).is_some());

        let conns = ConnectionLimit::new(1);
        let c = conns.acquire().unwrap();
        assert!(conns.acquire().is_none());
        drop(c);
        assert_eq!(conns.open(), 0);
    }
}
