<?php
// A Mercure publisher written by others: Debian's php-symfony-mercure (the
// Symfony Mercure component, 0.6.x) publishes to Herald's Mercure door through
// its Hub and Update API, with a JWT this script mints itself (HS256, as the
// component's users do without lcobucci/jwt). Run by crates/server/tests/mercure/php.rs.
//
// Env: HUB_URL (the door, …/.well-known/mercure), PUBLISHER_SECRET (the HMAC
// key the door verifies publishers' tokens with), PUBLISH_SELECTORS (a JSON
// array: the token's `mercure.publish`), PUBLIC_TOPIC, ALTERNATE_TOPIC,
// PRIVATE_TOPIC, PUBLIC_DATA, PRIVATE_DATA, PRIVATE_ID, PRIVATE_TYPE.
// Publishes the private update first, then the public one, and prints the ids
// the hub returned: {"private": "…", "public": "…"}.

declare(strict_types=1);

if (!stream_resolve_include_path('Symfony/Component/Mercure/autoload.php')) {
    fwrite(STDERR, "php-symfony-mercure is missing: run scripts/install-test-deps\n");
    exit(2);
}
require_once 'Symfony/Component/Mercure/autoload.php';

use Symfony\Component\Mercure\Hub;
use Symfony\Component\Mercure\Jwt\StaticTokenProvider;
use Symfony\Component\Mercure\Update;

function env(string $name): string
{
    $value = getenv($name);
    if ($value === false) {
        fwrite(STDERR, "missing environment variable $name\n");
        exit(2);
    }
    return $value;
}

function base64url(string $bytes): string
{
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

// An HS256 JWT carrying Mercure's 0.x `mercure` claim.
function mint(array $claims, string $secret): string
{
    $flags = JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR;
    $signed = base64url(json_encode(['alg' => 'HS256', 'typ' => 'JWT'], $flags)) . '.'
        . base64url(json_encode($claims, $flags));
    return $signed . '.' . base64url(hash_hmac('sha256', $signed, $secret, true));
}

$public = env('PUBLIC_TOPIC');
$alternate = env('ALTERNATE_TOPIC');
$private = env('PRIVATE_TOPIC');
// No `exp`, as static publisher tokens usually are.
$selectors = json_decode(env('PUBLISH_SELECTORS'), false, 8, JSON_THROW_ON_ERROR);
$jwt = mint(['mercure' => ['publish' => $selectors]], env('PUBLISHER_SECRET'));

$hub = new Hub(env('HUB_URL'), new StaticTokenProvider($jwt));
try {
    $privateId = $hub->publish(new Update(
        $private,
        env('PRIVATE_DATA'),
        true,
        env('PRIVATE_ID'),
        env('PRIVATE_TYPE')
    ));
    $publicId = $hub->publish(new Update([$public, $alternate], env('PUBLIC_DATA')));
} catch (Throwable $e) {
    $why = $e->getMessage();
    for ($cause = $e->getPrevious(); $cause !== null; $cause = $cause->getPrevious()) {
        $why .= ': ' . $cause->getMessage();
    }
    fwrite(STDERR, get_class($e) . ": $why\n");
    exit(1);
}
echo json_encode(['private' => $privateId, 'public' => $publicId], JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR), "\n";
