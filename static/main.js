/** Boot: one Player (the session) and its UI; `window.dvrgate` is the page's one global. */

import { Player } from './player.js';
import { UI } from './ui.js';
import { resolveTime, parseDuration, parseUserTime } from './time.js';

const player = new Player(document.getElementById('video'));
player.forceHls = new URLSearchParams(location.search).get('hls') === '1';
const ui = new UI(player);
window.dvrgate = { player, ui, resolveTime, parseDuration, parseUserTime };
ui.start();
