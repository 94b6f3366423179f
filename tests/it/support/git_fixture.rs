//! Git repositories built commit by commit in temp dirs, for tests of the git layer, plans
//! checked against a repository, and whole upgrades.

use std::path::Path;

use git2::{Oid, Repository, RepositoryInitOptions, Signature, Time};
use tempfile::TempDir;
use upstep::git::GitRepo;

/// 2023-11-14T22:13:20Z; fixture steps are usually a day apart.
pub const BASE_TIME: i64 = 1_700_000_000;

pub fn signature(time: i64) -> Signature<'static> {
    Signature::new("Fixture", "fixture@example.com", &Time::new(time, 0)).unwrap()
}

/// A repository in a temp dir, written commit by commit.
pub struct GitFixture {
    pub dir: TempDir,
    pub repo: Repository,
}

impl GitFixture {
    pub fn new() -> GitFixture {
        let dir = TempDir::new().unwrap();
        let mut options = RepositoryInitOptions::new();
        options.initial_head("main");
        let repo = Repository::init_opts(dir.path(), &options).unwrap();
        GitFixture { dir, repo }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes (`Some`) or deletes (`None`) files, stages them and commits on HEAD.
    pub fn commit(&self, changes: &[(&str, Option<&str>)], time: i64) -> Oid {
        let mut index = self.repo.index().unwrap();
        for (path, content) in changes {
            let full = self.path().join(path);
            match content {
                Some(content) => {
                    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                    std::fs::write(&full, content).unwrap();
                    index.add_path(Path::new(path)).unwrap();
                }
                None => {
                    std::fs::remove_file(&full).unwrap();
                    index.remove_path(Path::new(path)).unwrap();
                }
            }
        }
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let sig = signature(time);
        self.repo
            .commit(Some("HEAD"), &sig, &sig, "fixture", &tree, &parents)
            .unwrap()
    }

    pub fn annotated_tag(&self, name: &str, commit: Oid, time: i64) {
        let object = self.repo.find_object(commit, None).unwrap();
        self.repo
            .tag(name, &object, &signature(time), "release", false)
            .unwrap();
    }

    pub fn lightweight_tag(&self, name: &str, commit: Oid) {
        let object = self.repo.find_object(commit, None).unwrap();
        self.repo.tag_lightweight(name, &object, false).unwrap();
    }

    pub fn branch(&self, name: &str, commit: Oid) {
        let commit = self.repo.find_commit(commit).unwrap();
        self.repo.branch(name, &commit, true).unwrap();
    }

    pub fn switch_branch(&self, name: &str) {
        self.repo.set_head(&format!("refs/heads/{name}")).unwrap();
        let mut checkout = git2::build::CheckoutBuilder::new();
        checkout.force().remove_untracked(true);
        self.repo.checkout_head(Some(&mut checkout)).unwrap();
    }

    pub fn open(&self) -> GitRepo {
        GitRepo::open(self.path()).unwrap()
    }
}
