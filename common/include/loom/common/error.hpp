// loom::Error and loom::Result<T>: how every fallible function in Loom reports failure.
//
// Why not exceptions: on the fabric path "not yet" is normal flow, and errors cross
// threads, completion queues and RPCs, where exceptions cannot travel. A third-party
// exception is caught where it is thrown and turned into an Error.
#pragma once

#include <expected>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace loom {

// Abseil's canonical codes (absl/status/status.h), whose comments say which are worth
// a retry: kUnavailable is; kFailedPrecondition and kInvalidArgument never are.
enum class ErrorCode {
  kCancelled,
  kUnknown,
  kInvalidArgument,
  kDeadlineExceeded,
  kNotFound,
  kAlreadyExists,
  kPermissionDenied,
  kResourceExhausted,
  kFailedPrecondition,
  kAborted,
  kOutOfRange,
  kUnimplemented,
  kInternal,
  kUnavailable,
  kDataLoss,
  kUnauthenticated,
};

std::string_view to_string(ErrorCode code);

// True for the codes where the same call may succeed later without any change by
// the caller (kUnavailable, kAborted, kDeadlineExceeded, kResourceExhausted).
bool is_retryable(ErrorCode code);

// A failure: a code, a message that names the bad thing (the field, the file, the
// input quoted), and the context each caller added on the way up.
class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // Innermost first: the order in which callers added it.
  const std::vector<std::string>& context() const { return context_; }

  // Adds what the caller was doing, e.g. "loading topology /etc/loom/node.xml".
  Error& with_context(std::string what) & {
    context_.push_back(std::move(what));
    return *this;
  }
  Error&& with_context(std::string what) && {
    context_.push_back(std::move(what));
    return std::move(*this);
  }

  // "outermost context: ...: innermost context: message": the one line a user sees.
  std::string to_string() const;

 private:
  ErrorCode code_;
  std::string message_;
  std::vector<std::string> context_;
};

// A value or the Error that stands in its place. [[nodiscard]]: an error dropped on the
// floor does not compile; `(void)` says that one is dropped on purpose.
template <typename T>
class [[nodiscard]] Result : public std::expected<T, Error> {
 public:
  using std::expected<T, Error>::expected;
  Result() = default;
  Result(std::expected<T, Error> other) : std::expected<T, Error>(std::move(other)) {}
};
using Status = Result<void>;

inline std::unexpected<Error> make_error(ErrorCode code, std::string message) {
  return std::unexpected<Error>(std::in_place, code, std::move(message));
}

// Adds context to a failed result and passes a successful one through.
template <typename T>
Result<T> with_context(Result<T> result, std::string_view what) {
  if (!result) result.error().with_context(std::string(what));
  return result;
}

}  // namespace loom

// Evaluates a Result; on failure returns its Error from the enclosing function, otherwise
// yields the value (nothing for Result<void>):
//   Bytes size = LOOM_TRY(parse_bytes(text));
//   config.level = LOOM_TRY(parse_level(text));
//   LOOM_TRY(bind_process(pid, set));
// The shape of Abseil's ASSIGN_OR_RETURN, as an expression (a GNU statement expression,
// which GCC and Clang both have). Use it only as a whole statement or as the whole right
// side of an initialisation or assignment, never inside a larger expression (an argument
// list, a braced initialiser, another LOOM_TRY): returning out of a statement expression
// skips the destructors of what the enclosing expression had built so far (AddressSanitizer
// caught exactly that leak).
#define LOOM_TRY(expr)                                            \
  ({                                                              \
    auto&& loom_try_result = (expr);                              \
    if (!loom_try_result) [[unlikely]]                            \
      return std::unexpected(std::move(loom_try_result).error()); \
    std::move(loom_try_result).value();                           \
  })

namespace loom::detail {
[[noreturn]] void check_failed(const char* condition, const char* file, int line,
                               std::string_view message);
}  // namespace loom::detail

// A broken invariant is a bug, not an error to handle: log it and abort.
#define LOOM_CHECK(condition, message)                                         \
  do {                                                                         \
    if (!(condition)) [[unlikely]]                                             \
      ::loom::detail::check_failed(#condition, __FILE__, __LINE__, (message)); \
  } while (false)
