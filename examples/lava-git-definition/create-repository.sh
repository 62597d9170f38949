#!/bin/sh
# Creates (or recreates) the git repository that examples/lava-git-definition.yaml
# fetches its test definitions from (`from: git`):
#
#     sh examples/lava-git-definition/create-repository.sh [PATH]
#
# PATH defaults to /tmp/convoy-example-definitions.git, the repository the job
# names (file:///tmp/convoy-example-definitions.git); another PATH needs the
# job's `repository:` changed to match. The repository is bare and holds the
# files next to this script (definitions/, scripts/) in one commit on branch
# main, tagged v1.0 (the server's `revision:`) and branched as stable (the
# client's `branch:`). Real git, no network, no git user needed; fixed commit
# dates, so the same files always give the same commit.
set -eu

repo=${1:-/tmp/convoy-example-definitions.git}
here=$(cd "$(dirname "$0")" && pwd)

git_() {
    git -c user.name="convoy example" -c user.email="convoy-example@example.invalid" \
        -c init.defaultBranch=main -c commit.gpgsign=false -c tag.gpgsign=false -c core.hooksPath=/dev/null "$@"
}

if [ -e "$repo" ]; then
    # recreate only what this script made: a bare repository, never any other directory
    if [ ! -f "$repo/HEAD" ] || [ "$(git_ -C "$repo" rev-parse --is-bare-repository 2>/dev/null)" != true ]; then
        echo "create-repository.sh: $repo exists and is not a bare git repository; not replacing it" >&2
        exit 1
    fi
    rm -rf "$repo"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/convoy-example-definitions.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM

cp -R "$here/definitions" "$here/scripts" "$work/"
chmod +x "$work"/scripts/*.sh
export GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" GIT_COMMITTER_DATE="2026-01-01T00:00:00Z"
git_ -C "$work" init --quiet
git_ -C "$work" add definitions scripts
git_ -C "$work" commit --quiet -m "LAVA test definition: greeting, with its scripts/greet.sh"
git_ -C "$work" tag -a v1.0 -m "greeting v1.0"
git_ -C "$work" branch stable

git_ init --quiet --bare "$repo"
git_ -C "$work" push --quiet "$repo" main stable v1.0
echo "created $repo: main and stable at $(git_ -C "$repo" rev-parse --short main), tag v1.0"
