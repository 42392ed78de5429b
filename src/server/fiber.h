// Fibers: request handlers run on their own stacks on an io thread, and
// park where they would wait, so that the thread serves other requests
// meanwhile.
//
// Why: a handler on the AWS backend spends most of its time waiting for
// DynamoDB or S3. On a worker thread every call costs that thread's sleep
// and wake-up, and the hand-offs between io thread and worker; on a fiber a
// wait is a stack switch and one epoll_ctl (docs/benchmarks.md has the
// figures).
//
// While a fiber runs, its thread's hooks are set:
//  - net::WaitHook: net::HttpClient's socket waits arm the socket in an
//    epoll instance of the io_context's, which its reactor watches (keeping
//    the call's deadline on a timer), and switch back to the io thread until
//    the socket is ready;
//  - core::BlockingHook: core::RunBlocking's work runs on a worker thread
//    while the fiber parks (what it throws is thrown on the fiber), and
//    core::SleepFor parks the fiber on a timer.
// Anything else that blocks stalls every fiber of the thread. Two rules
// follow for code a fiber may run (the AWS stores, the router, the core):
//  - a lock is never held across a park point (a network call, RunBlocking):
//    the next fiber of the thread that wants it would block the thread, and
//    the holder could never resume. Such a section runs inside RunBlocking;
//  - state kept per thread (thread_local) is not held across a park point
//    either: another fiber of the thread would find it in use.
// A fiber's stack is entered with glibc's ucontext once, and switched with
// _setjmp/_longjmp from then on (no system call); a fiber whose body has
// returned waits on its thread for the next. Switches are announced to
// AddressSanitizer when it is on.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>

#include <boost/asio/any_io_executor.hpp>

#include "server/worker_pool.h"

namespace imgsvc::server {

// Runs `body` on a new fiber of the calling thread, which must be the one
// running `executor`; once `body` returns, runs `then` on the thread's own
// stack. Returns when the fiber first parks or finishes. `blocking_work`
// runs the fiber's core::RunBlocking work.
void StartFiber(const boost::asio::any_io_executor& executor, WorkerPool& blocking_work,
                std::function<void()> body, std::function<void()> then);

// On a fiber (in a body given to StartFiber): parks it until one of poll's
// `events` comes on `fd`, or `deadline` passes (then `timed_out` is set);
// returns the events that came. What net::HttpClient's waits do on a fiber,
// for the server's own reads of a request body.
short ParkUntilReady(int fd, short events, std::chrono::steady_clock::time_point deadline, bool& timed_out);

// Fibers are counted in two lanes, each with its own bound: a request with a
// body holds its fiber while the client sends it, at the client's pace, so
// slow uploads must not take every slot from the requests without one.
enum class FiberLane { kBodiless, kWithBody };

// Takes `weight` of `lane`'s `bound` on the calling io thread: a fiber in
// flight is charged its weight until it ends (a count: 1 each; bytes of a
// body held: the body's length), and each may hold an AWS connection, as a
// worker does. True if it fit, or if the lane had nothing in flight (so a
// weight over the bound still runs, alone); otherwise `start` is queued, to
// be called, in order, once what ends has made room for it. Kept per io
// thread, so that room passes on without a lock or a wake-up of another
// thread.
bool TakeFiberSlotOrQueue(FiberLane lane, std::uint64_t bound, std::uint64_t weight, std::function<void()> start);
// Called on the io thread by a fiber's `then`, with what it took.
void ReturnFiberSlot(FiberLane lane, std::uint64_t bound, std::uint64_t weight);
// Called on an io thread whose loop has ended for good (the server stopped,
// its grace periods over): the starts still waiting in either lane are
// dropped, releasing what they hold while the server is still there, and
// the counts start again from zero. A fiber still parked then is never
// resumed; it is kept, with what it holds, until the process ends.
void DropWaitingFibers();

// For an io thread winding down once the server's grace period is over.
// The starts waiting for a slot are dropped; the fibers parked in
// ParkUntilReady (waiting on their clients) are resumed as if the wait had
// failed (POLLERR), and return as soon as they see it.
void DropWaitingStartsAndWakeClientWaits();
// The calling io thread's fibers holding a slot. Once the client waits are
// woken, these are doing a request's work (an AWS call, blocking work on a
// worker), which a stop should not cut between two calls.
std::size_t FibersInFlight();

// True on a fiber: StartFiber runs a body on a worker instead when no stack
// can be had.
bool RunningOnAFiber();

}  // namespace imgsvc::server
