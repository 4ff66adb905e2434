// greeter-server-cpp: the gRPC C-core peer of examples/greeter-server, the
// seed's Greeter on the C++ synchronous server (Debian's libgrpc++-dev), so
// that the benchmarks in bench/ can run the program a C/C++ user would
// otherwise pick in the same run as ours.
//
// SayHello logs "Received: <name>", sleeps the request's duration (Go
// duration text; empty or invalid means no sleep, as the seed ignores the
// parse error) and replies "Hello <name>". The sleep is a plain sleep, like
// the seed's time.Sleep: it does not watch the call's cancellation.
//
// Signals, Kubernetes style: SIGINT and SIGTERM are blocked in every thread
// and a dedicated thread takes them with sigwait. The first one wakes the
// main thread, which logs "Shutdown Server..." and calls
// Server::Shutdown(deadline) (C-core's graceful stop: GOAWAY, wait for the
// calls in flight, cancel what is left at the deadline); the second one calls
// _exit(1) at once. Shutdown returns only when every handler has returned,
// also after the deadline (that is C-core's behaviour this peer is here to
// show). Then "gRPC server graceful shutdown completed" and exit 0, or, when
// the deadline passed, "gRPC server graceful shutdown: deadline exceeded" and
// exit 1.
//
// Flags (Go flag style, -name value or -name=value, one or two dashes):
//   -port N              (default 50051)
//   -host H              (default "": all addresses, "[::]")
//   -shutdown-timeout D  deadline of the graceful stop (default 0: none)
//
// Build: bench/grpc/cpp-greeter/build.sh (protoc + grpc_cpp_plugin, g++).
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "helloworld.grpc.pb.h"

namespace {

// Go's log.Printf format: "2006/01/02 15:04:05 message\n" on stderr.
void logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void logf(const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  time_t now = time(nullptr);
  struct tm tm;
  localtime_r(&now, &tm);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y/%m/%d %H:%M:%S", &tm);
  fprintf(stderr, "%s %s\n", stamp, msg);
}

// Go's time.ParseDuration: [-+]?([0-9]*(\.[0-9]*)?[a-z]+)+ with units ns, us,
// µs, μs, ms, s, m, h; "0" alone is valid. Returns false on a syntax error.
bool parse_duration(const std::string &s, std::chrono::nanoseconds *out) {
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
  if (s.substr(i) == "0") {
    *out = std::chrono::nanoseconds(0);
    return true;
  }
  if (i == s.size()) return false;
  long double total = 0;
  while (i < s.size()) {
    size_t start = i;
    long double v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') v = v * 10 + (s[i++] - '0');
    bool digits = i > start;
    if (i < s.size() && s[i] == '.') {
      i++;
      long double scale = 0.1L;
      size_t fstart = i;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        v += (s[i++] - '0') * scale;
        scale /= 10;
      }
      digits = digits || i > fstart;
    }
    if (!digits) return false;
    size_t ustart = i;
    while (i < s.size() && s[i] != '.' && (s[i] < '0' || s[i] > '9')) i++;
    std::string unit = s.substr(ustart, i - ustart);
    long double mult;
    if (unit == "ns") mult = 1;
    else if (unit == "us" || unit == "\xc2\xb5s" || unit == "\xce\xbcs") mult = 1e3L;
    else if (unit == "ms") mult = 1e6L;
    else if (unit == "s") mult = 1e9L;
    else if (unit == "m") mult = 60e9L;
    else if (unit == "h") mult = 3600e9L;
    else return false;
    total += v * mult;
    if (total > 9.2e18L) return false;
  }
  *out = std::chrono::nanoseconds(static_cast<long long>(neg ? -total : total));
  return true;
}

class GreeterImpl final : public Greeter::Service {
  grpc::Status SayHello(grpc::ServerContext *, const HelloRequest *req, HelloReply *reply) override {
    logf("Received: %s", req->name().c_str());
    std::chrono::nanoseconds d(0);
    if (parse_duration(req->duration(), &d) && d.count() > 0) std::this_thread::sleep_for(d);
    reply->set_message("Hello " + req->name());
    return grpc::Status::OK;
  }
};

std::mutex mu;
std::condition_variable cv;
bool signalled = false;

void signal_thread(sigset_t set) {
  for (int n = 0;; n++) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (n > 0) _exit(1);  // second signal: exit now
    std::lock_guard<std::mutex> lock(mu);
    signalled = true;
    cv.notify_all();
  }
}

[[noreturn]] void usage(const char *prog, const char *err) {
  if (err) fprintf(stderr, "%s\n", err);
  fprintf(stderr,
          "Usage of %s:\n"
          "  -host string\n\tlisten host (default: all addresses)\n"
          "  -port int\n\tThe server port (default 50051)\n"
          "  -shutdown-timeout duration\n\tdeadline of the graceful stop (default 0: none)\n",
          prog);
  exit(err ? 2 : 0);
}

}  // namespace

int main(int argc, char **argv) {
  int port = 50051;
  std::string host;
  std::chrono::nanoseconds timeout(0);
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) a.erase(0, 1);
    if (a == "-h" || a == "-help") usage(argv[0], nullptr);
    std::string name = a, value;
    size_t eq = a.find('=');
    if (eq != std::string::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      usage(argv[0], ("flag needs an argument: " + a).c_str());
    }
    if (name == "-port") {
      char *end = nullptr;
      long v = strtol(value.c_str(), &end, 10);
      if (value.empty() || *end || v < 0 || v > 65535)
        usage(argv[0], ("invalid value \"" + value + "\" for flag -port").c_str());
      port = static_cast<int>(v);
    } else if (name == "-host") {
      host = value;
    } else if (name == "-shutdown-timeout") {
      if (!parse_duration(value, &timeout))
        usage(argv[0], ("invalid value \"" + value + "\" for flag -shutdown-timeout").c_str());
    } else {
      usage(argv[0], ("flag provided but not defined: " + name).c_str());
    }
  }

  // Block the signals before gRPC starts its threads, so only sigwait sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread(signal_thread, set).detach();

  std::string addr = (host.empty() ? "[::]" : host) + ":" + std::to_string(port);
  GreeterImpl service;
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort(addr, grpc::InsecureServerCredentials(), &bound);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server(builder.BuildAndStart());
  if (!server || bound == 0) {
    logf("failed to listen on %s", addr.c_str());
    return 1;
  }
  logf("server listening at %s", addr.c_str());

  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [] { return signalled; });
  }
  logf("Shutdown Server...");
  if (timeout.count() > 0) {
    auto deadline = std::chrono::system_clock::now() + timeout;
    server->Shutdown(deadline);
    if (std::chrono::system_clock::now() >= deadline) {
      logf("gRPC server graceful shutdown: deadline exceeded");
      fflush(stderr);
      _exit(1);
    }
  } else {
    server->Shutdown();
  }
  server->Wait();
  logf("gRPC server graceful shutdown completed");
  return 0;
}
