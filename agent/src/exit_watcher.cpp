#include "loom/agent/exit_watcher.hpp"

#include <fmt/format.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "loom/common/errno_text.hpp"

namespace loom::agent {

Result<std::unique_ptr<ExitWatcher>> ExitWatcher::open() {
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!epoll || !wake) {
    return make_error(ErrorCode::kResourceExhausted,
                      fmt::format("epoll or eventfd: {}", loom::errno_text(errno)));
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = wake.get();
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, wake.get(), &event) != 0)
    return make_error(ErrorCode::kInternal, fmt::format("epoll_ctl: {}", loom::errno_text(errno)));
  return std::unique_ptr<ExitWatcher>(new ExitWatcher(std::move(epoll), std::move(wake)));
}

ExitWatcher::ExitWatcher(UniqueFd epoll, UniqueFd wake)
    : epoll_(std::move(epoll)), wake_(std::move(wake)), thread_([this] { serve(); }) {}

void ExitWatcher::watch(UniqueFd pidfd, std::function<void()> exited) {
  const int fd = pidfd.get();
  {
    std::lock_guard lock(mutex_);
    watched_[fd] = {std::move(pidfd), std::move(exited)};
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = fd;
  // Cannot fail for a pidfd on a live epoll: an error would be a bug, and the process's
  // exit unseen, so it is reported as an exit at once (the caller's wait says more).
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
    std::function<void()> callback;
    {
      std::lock_guard lock(mutex_);
      callback = std::move(watched_[fd].second);
      watched_.erase(fd);
    }
    callback();
  }
}

void ExitWatcher::stop() {
  if (!thread_.joinable()) return;
  const std::uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
  thread_.join();
}

void ExitWatcher::serve() {
  std::array<epoll_event, 16> events{};
  for (;;) {
    const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // only a bug (EBADF, EINVAL) gets here: nothing would ever be seen again
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_.get()) return;
      std::pair<UniqueFd, std::function<void()>> entry;
      {
        std::lock_guard lock(mutex_);
        auto it = watched_.find(fd);
        if (it == watched_.end()) continue;
        entry = std::move(it->second);
        watched_.erase(it);
      }
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
      entry.second();
    }
  }
}

}  // namespace loom::agent
