fn main() {
    std::process::exit(upstep::run(std::env::args_os()));
}
